# Promotion policy: may release `input.release` move from `input.source` into `input.target`?
#
# Input is built by pipeline/promotion.py (evidence bundle from the GitOps repo, soak time
# from git history, approvers, freeze file, active Argo CD sync windows, trivy-operator gate).
# Parameters (gates, soak times, approver counts, ...) come from data.promotion
# (policies/promotion.data.json, optionally overlaid by a profile such as promotion.local.json).
package main

import rego.v1

promotion_params := data.promotion

# Policies share `package main` with the manifest policies: act only on promotion requests.
promotion_request if input.kind == "PromotionRequest"

promotion_target := input.target

promotion_release := input.release

# -- the source env must be the rung right below the target (dev comes from a ci run)
deny contains msg if {
	promotion_request
	allowed := object.get(promotion_params.allowed_sources, promotion_target, [])
	not input.source in allowed
	msg := sprintf("env <%s> accepts promotions only from %v, not from <%s>", [promotion_target, allowed, input.source])
}

# -- the evidence bundle must describe the very release being promoted
deny contains msg if {
	promotion_request
	some key in ["gateway_digest", "vllm_digest", "model_revision"]
	ev := object.get(object.get(input.evidence, "release", {}), key, "<missing>")
	ev != promotion_release[key]
	msg := sprintf("evidence for release <%s> is for %s %s, but the release being promoted has %s", [promotion_release.id, key, ev, promotion_release[key]])
}

# -- every required gate ran and passed
deny contains msg if {
	promotion_request
	some gate in promotion_params.required_gates
	not input.evidence.gates[gate]
	msg := sprintf("release <%s>: no <%s> result in the evidence from <%s> (required: %v)", [promotion_release.id, gate, input.source, promotion_params.required_gates])
}

deny contains msg if {
	promotion_request
	some gate in promotion_params.required_gates
	result := input.evidence.gates[gate]
	result.status != "passed"
	msg := sprintf("release <%s>: gate <%s> is %s in the evidence from <%s>, must be passed", [promotion_release.id, gate, result.status, input.source])
}

# -- ...on the SAME digests
deny contains msg if {
	promotion_request
	some gate in promotion_params.required_gates
	result := input.evidence.gates[gate]
	some image in ["gateway", "vllm"]
	ran := object.get(object.get(result, "digests", {}), image, "<missing>")
	ran != promotion_release[sprintf("%s_digest", [image])]
	msg := sprintf("release <%s>: gate <%s> ran on %s digest %s, not on the promoted %s", [promotion_release.id, gate, image, ran, promotion_release[sprintf("%s_digest", [image])]])
}

# -- soak: the release ran long enough in the source env
deny contains msg if {
	promotion_request
	required := object.get(promotion_params.soak_seconds, promotion_target, 0)
	required > 0
	input.soak.elapsed_seconds < required
	msg := sprintf("release <%s> has soaked %ds in <%s> (since %s); <%s> requires %ds", [promotion_release.id, round(input.soak.elapsed_seconds), input.source, input.soak.since, promotion_target, required])
}

# -- approvals: N distinct people, not counting the promoter unless allowed
promotion_approvers := {lower(a) | some a in input.approvers} - promotion_self_approval

promotion_self_approval := {lower(input.actor)} if not promotion_params.self_approval_counts

promotion_self_approval := set() if promotion_params.self_approval_counts

deny contains msg if {
	promotion_request
	required := object.get(promotion_params.approvers_required, promotion_target, 0)
	count(promotion_approvers) < required
	msg := sprintf("env <%s> needs %d distinct approvers other than the promoter <%s>; got %d %v (add --approve NAME)", [promotion_target, required, input.actor, count(promotion_approvers), promotion_sorted(promotion_approvers)])
}

promotion_sorted(s) := sort([x | some x in s])

# -- freeze: a rolled-back env takes no promotion until a human unfreezes it
deny contains msg if {
	promotion_request
	input.freeze.frozen
	msg := sprintf("env <%s> is frozen since %s by %s (%s); run `python -m pipeline unfreeze --env %s --by NAME` first", [promotion_target, input.freeze.since, input.freeze.by, input.freeze.reason, promotion_target])
}

# -- Argo CD sync windows of the AppProject
deny contains msg if {
	promotion_request
	some w in input.sync_windows.active_deny
	msg := sprintf("a deny sync window is active for <%s>: %s", [promotion_target, w])
}

deny contains msg if {
	promotion_request
	input.sync_windows.allow_defined
	count(input.sync_windows.active_allow) == 0
	msg := sprintf("no allow sync window is active for <%s> now (next syncs wait for one): %v", [promotion_target, input.sync_windows.allow_windows])
}

# -- trivy-operator: the running cluster's VulnerabilityReports for these digests are clean and fresh
deny contains msg if {
	promotion_request
	object.get(promotion_params.trivy_operator_required, promotion_target, false)
	not input.trivy_operator.passed
	msg := sprintf("env <%s> requires a clean trivy-operator gate: %s", [promotion_target, input.trivy_operator.detail])
}

# -- images: a local (unbuilt) release may go where data allows, elsewhere only with an explicit flag
deny contains msg if {
	promotion_request
	object.get(promotion_params.images_built_required, promotion_target, false)
	not promotion_release.images_built
	not input.allow_unbuilt_images
	msg := sprintf("release <%s> has no registry-built images (local executor); <%s> requires built images (or --allow-unbuilt-images, recorded in the commit)", [promotion_release.id, promotion_target])
}
