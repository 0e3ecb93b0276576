# Promotion policy: may release `input.release` move from `input.source` into `input.target`?
#
# Input is built by pipeline/gitops/promotion_policy.py (evidence bundle from the GitOps repo, soak time
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

# -- ...on the SAME release: each gate says what it exercised (its `subject`, recorded by the stage
#    itself) and that must be the release being promoted. Built images: the digests it ran.
#    Local releases (imagesBuilt false): the release id and the commit it was built from.
#    Gates checked: every required gate, and the source env's SLO gate(s).
promotion_checked_gates contains [key, g] if {
	some key in promotion_params.required_gates
	g := input.evidence.gates[key]
}

promotion_checked_gates contains [key, g] if {
	some key, g in input.evidence.gates
	object.get(g, "stage", key) == "loadtest"
	object.get(g, "env", "") == input.source
}

# How a gate's subject is matched (data: subject_match[gate]): "release" (default), "commit"
# (the gate tested the source, e.g. unit tests: the commit the release was built from) or
# "gateway" (the gate ran the release's gateway image with a named stand-in for vLLM, e.g. load
# tests on the simulator image; vLLM's own image is proven by the gates matched on "release").
promotion_subject_mode(g, key) := object.get(object.get(promotion_params, "subject_match", {}), object.get(g, "stage", key), "release")

promotion_subject(g) := s if {
	s := object.get(g, "subject", null)
	is_object(s)
}

deny contains msg if {
	promotion_request
	some [key, g] in promotion_checked_gates
	not promotion_subject(g)
	msg := sprintf("release <%s>: gate <%s> records no subject (what it exercised); a result without one (hand-written, or from before subjects were recorded) vouches for no release — re-run the stage", [promotion_release.id, key])
}

deny contains msg if {
	promotion_request
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) == "commit"
	s := promotion_subject(g)
	object.get(s, "commit", "<none>") != promotion_release.commit
	msg := sprintf("release <%s>: gate <%s> ran on commit %s, not on the release's commit %s", [promotion_release.id, key, object.get(s, "commit", "<none>"), promotion_release.commit])
}

deny contains msg if {
	promotion_request
	promotion_release.images_built
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) == "release"
	s := promotion_subject(g)
	some image in ["gateway", "vllm"]
	want := promotion_release[sprintf("%s_digest", [image])]
	ran := object.get(s, sprintf("%s_digest", [image]), "<none>")
	ran != want
	msg := sprintf("release <%s>: gate <%s> exercised %s with %s digest %s, not the promoted %s", [promotion_release.id, key, object.get(s, "kind", "?"), image, ran, want])
}

promotion_names_release(s) if {
	s.release_id == promotion_release.id
	s.commit == promotion_release.commit
}

deny contains msg if {
	promotion_request
	promotion_release.images_built
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) == "gateway"
	s := promotion_subject(g)
	ran := object.get(s, "gateway_digest", "<none>")
	ran != promotion_release.gateway_digest
	msg := sprintf("release <%s>: gate <%s> exercised %s with gateway digest %s, not the promoted %s", [promotion_release.id, key, object.get(s, "kind", "?"), ran, promotion_release.gateway_digest])
}

deny contains msg if {
	promotion_request
	promotion_release.images_built
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) == "gateway"
	s := promotion_subject(g)
	object.get(s, "vllm_digest", "") == ""
	object.get(s, "vllm_stand_in", "") == ""
	msg := sprintf("release <%s>: gate <%s> names neither the vLLM digest it ran nor its stand-in (vllm_stand_in)", [promotion_release.id, key])
}

deny contains msg if {
	promotion_request
	promotion_release.images_built
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) == "gateway"
	s := promotion_subject(g)
	ran := object.get(s, "vllm_digest", "")
	ran != ""
	ran != promotion_release.vllm_digest
	msg := sprintf("release <%s>: gate <%s> exercised %s with vllm digest %s, not the promoted %s", [promotion_release.id, key, object.get(s, "kind", "?"), ran, promotion_release.vllm_digest])
}

deny contains msg if {
	promotion_request
	not promotion_release.images_built
	some [key, g] in promotion_checked_gates
	promotion_subject_mode(g, key) in {"release", "gateway"}
	s := promotion_subject(g)
	not promotion_names_release(s)
	msg := sprintf("release <%s>: gate <%s> exercised %s of release %s at commit %s, not release <%s> at commit %s (imagesBuilt is false: the gate must have run the source the release was built from)", [promotion_release.id, key, object.get(s, "kind", "?"), object.get(s, "release_id", "<none>"), object.get(s, "commit", "<none>"), promotion_release.id, promotion_release.commit])
}

# -- the SLO gate of the SOURCE env: a passed loadtest run against <source> on this release
promotion_source_slo_passed if {
	some key, g in input.evidence.gates
	object.get(g, "stage", key) == "loadtest"
	object.get(g, "env", "") == input.source
	g.status == "passed"
}

deny contains msg if {
	promotion_request
	object.get(object.get(promotion_params, "slo_gate_from_source", {}), promotion_target, false)
	not promotion_source_slo_passed
	found := sort([sprintf("%s(env %v): %s", [k, object.get(g, "env", null), object.get(g, "status", "?")]) | some k, g in input.evidence.gates; object.get(g, "stage", k) == "loadtest"])
	msg := sprintf("release <%s>: no passed SLO gate (loadtest) of the source env <%s>; after the release is deployed in %s run `python -m pipeline loadtest --env %s --attach` (with `--target <its URL>` in production) (loadtests found: %v)", [promotion_release.id, input.source, input.source, input.source, found])
}

# -- skipped checks: for listed targets a gate must have run all its checks (data: no_skipped_checks)
deny contains msg if {
	promotion_request
	object.get(object.get(promotion_params, "no_skipped_checks", {}), promotion_target, false)
	some [key, g] in promotion_checked_gates
	some check in object.get(g, "skipped_checks", [])
	msg := sprintf("env <%s> accepts no skipped checks: gate <%s> skipped check <%s>", [promotion_target, key, check])
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

# The promoter may not approve their own promotion (name, or the local part of an email actor).
promotion_is_actor(a) if lower(a) == lower(input.actor)

promotion_is_actor(a) if {
	parts := split(lower(input.actor), "@")
	count(parts) == 2
	lower(a) == parts[0]
}

deny contains msg if {
	promotion_request
	not promotion_params.self_approval_counts
	some a in input.approvers
	promotion_is_actor(a)
	msg := sprintf("approver <%s> is the promoter <%s> (%s): an approval must come from someone else", [a, input.actor, object.get(input, "actor_source", "?")])
}

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
	msg := sprintf("a deny sync window is active for <%s>: %s, since %s, ends %s; promotions into <%s> are refused until then (Argo CD would not sync them; no policy profile lifts this, see docs/promotion.md#sync-windows)", [promotion_target, w.window, w.since, w.ends, promotion_target])
}

deny contains msg if {
	promotion_request
	input.sync_windows.allow_defined
	count(input.sync_windows.active_allow) == 0
	msg := sprintf("no allow sync window is active for <%s> now (next syncs wait for one): %v", [promotion_target, input.sync_windows.allow_windows])
}

# -- trivy-operator: the running cluster's VulnerabilityReports for these digests are clean and fresh
promotion_trivy_required if object.get(promotion_params.trivy_operator_required, promotion_target, false)

# Given explicitly (--trivy-reports), it counts even where data does not require it.
promotion_trivy_required if object.get(input.trivy_operator, "requested", false)

deny contains msg if {
	promotion_request
	promotion_trivy_required
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

# -- the model: a release that changes the model the target env serves (the content digest of its
#    weights, release pin vllm.model.artifact.contentDigest) needs a passed eval of THAT model against
#    the model the env serves now (docs/models.md). The evidence's eval gates (stage `eval`, key `eval`
#    from ci or `eval@<env>` attached later) carry the eval stage's result object under `eval`.
promotion_release_model := object.get(promotion_release, "model_content_digest", null)

promotion_target_model := m if {
	m := input.target_model
	is_object(m)
} else := {}

promotion_env_model := object.get(promotion_target_model, "content_digest", null)

promotion_model_changed if promotion_release_model != promotion_env_model

promotion_or_none(v) := v if {
	v != null
} else := "none"

promotion_evals contains [key, g] if {
	some key, g in input.evidence.gates
	object.get(g, "stage", key) == "eval"
}

promotion_eval_of(g) := e if {
	e := g.eval
	is_object(e)
} else := {}

promotion_eval_baseline(e) := b if {
	base := object.get(e, "baseline", null)
	is_object(base)
	b := object.get(base, "content_digest", null)
} else := null

# An eval vouches for the change when it passed, ran the release's model, and compared it with the
# model the env serves (with no model artifact in the env yet: any baseline, or none = floor only).
promotion_eval_vouches(g) if {
	g.status == "passed"
	e := promotion_eval_of(g)
	e.verdict == "pass"
	object.get(object.get(e, "candidate", {}), "content_digest", null) == promotion_release_model
	promotion_eval_baseline_fits(promotion_eval_baseline(e))
}

promotion_eval_baseline_fits(b) if b == promotion_env_model

promotion_eval_baseline_fits(_) if promotion_env_model == null

promotion_eval_found := sort([sprintf("%s: %s (candidate %s, baseline %s)", [key, object.get(e, "verdict", object.get(g, "status", "?")), promotion_or_none(object.get(object.get(e, "candidate", {}), "content_digest", null)), promotion_or_none(promotion_eval_baseline(e))]) |
	some [key, g] in promotion_evals
	e := promotion_eval_of(g)
])

deny contains msg if {
	promotion_request
	promotion_model_changed
	promotion_release_model != null
	not promotion_any_eval_vouches
	msg := sprintf("release <%s> changes the model of <%s> from content digest %s to %s: no passed eval of %s against %s in the evidence from <%s> (evals found: %v); run `python -m pipeline eval --candidate <the release's model artifact> --env %s` and give its result to promote with --evidence", [promotion_release.id, promotion_target, promotion_or_none(promotion_env_model), promotion_release_model, promotion_release_model, promotion_or_none(promotion_env_model), input.source, promotion_eval_found, promotion_target])
}

promotion_any_eval_vouches if {
	some [_, g] in promotion_evals
	promotion_eval_vouches(g)
}

# A release without a model artifact would replace a verified model with one nothing checked.
deny contains msg if {
	promotion_request
	promotion_release_model == null
	promotion_env_model != null
	msg := sprintf("release <%s> pins no model artifact (contentDigest) but <%s> serves model content digest %s: a release must pin the model artifact it serves", [promotion_release.id, promotion_target, promotion_env_model])
}

# The evidence bundle must be for the release's model too (its eval gates are read against it).
deny contains msg if {
	promotion_request
	ev := object.get(object.get(input.evidence, "release", {}), "model_content_digest", null)
	ev != promotion_release_model
	msg := sprintf("evidence for release <%s> is for model content digest %s, but the release being promoted has %s", [promotion_release.id, promotion_or_none(ev), promotion_or_none(promotion_release_model)])
}
