package main

import rego.v1

# A release every test starts from; each test breaks one thing and expects exactly that denial.
promotion_test_digest_a := "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

promotion_test_digest_b := "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

promotion_test_rel := {
	"id": "0.1.0+gabc1234",
	"commit": "c0ffee",
	"gateway_digest": promotion_test_digest_a,
	"vllm_digest": promotion_test_digest_b,
	"model_revision": "main",
	"images_built": true,
}

promotion_test_subject := {"kind": "release", "release_id": "0.1.0+gabc1234", "commit": "c0ffee", "gateway_digest": promotion_test_digest_a, "vllm_digest": promotion_test_digest_b}

promotion_test_gate_ok := {"status": "passed", "skipped_checks": [], "subject": promotion_test_subject}

promotion_test_slo_dev := object.union(promotion_test_gate_ok, {"stage": "loadtest", "env": "dev"})

promotion_test_slo_staging := object.union(promotion_test_gate_ok, {"stage": "loadtest", "env": "staging"})

promotion_test_gates := {"test": promotion_test_gate_ok, "scan": promotion_test_gate_ok, "smoke": promotion_test_gate_ok, "loadtest": promotion_test_slo_dev, "loadtest@staging": promotion_test_slo_staging}

promotion_test_good := {
	"kind": "PromotionRequest",
	"target": "prod",
	"source": "staging",
	"actor": "rm",
	"release": promotion_test_rel,
	"evidence": {"release": promotion_test_rel, "gates": promotion_test_gates},
	"soak": {"since": "2026-01-01T00:00:00Z", "elapsed_seconds": 100000},
	"approvers": ["alice", "bob"],
	"freeze": {"frozen": false},
	"sync_windows": {"active_deny": [], "allow_defined": false, "active_allow": [], "allow_windows": []},
	"trivy_operator": {"passed": true, "detail": "clean", "requested": true},
	"allow_unbuilt_images": false,
}

promotion_test_params := {
	"allowed_sources": {"dev": ["ci"], "staging": ["dev"], "prod": ["staging"]},
	"required_gates": ["test", "scan", "smoke", "loadtest"],
	"subject_match": {"test": "commit"},
	"slo_gate_from_source": {"staging": true, "prod": true},
	"no_skipped_checks": {"prod": true},
	"soak_seconds": {"staging": 1800, "prod": 86400},
	"approvers_required": {"prod": 2},
	"self_approval_counts": false,
	"trivy_operator_required": {"prod": true},
	"images_built_required": {"prod": true},
}

promotion_test_denials(inp) := ds if {
	ds := deny with input as inp with data.promotion as promotion_test_params
}

promotion_test_only(inp, needle) if {
	ds := promotion_test_denials(inp)
	count(ds) == 1
	some d in ds
	contains(d, needle)
}

test_good_release_is_allowed if {
	count(promotion_test_denials(promotion_test_good)) == 0
}

test_wrong_source_rung if {
	promotion_test_only(object.union(promotion_test_good, {"source": "dev"}), "accepts promotions only from")
}

test_missing_gate if {
	# object.union merges nested objects, so drop the gate explicitly.
	promotion_test_only(json.remove(promotion_test_good, ["evidence/gates/loadtest"]), "no <loadtest> result")
}

# Replace one gate wholesale (object.union would merge the old subject into the new one).
promotion_test_with_gate(key, g) := json.patch(promotion_test_good, [{"op": "add", "path": sprintf("/evidence/gates/%s", [key]), "value": g}])

test_failed_gate if {
	promotion_test_only(promotion_test_with_gate("scan", object.union(promotion_test_gate_ok, {"status": "failed"})), "gate <scan> is failed")
}

test_gate_on_other_digest if {
	other := object.union(promotion_test_subject, {"gateway_digest": promotion_test_digest_b})
	g := object.union(promotion_test_gate_ok, {"subject": other})
	promotion_test_only(promotion_test_with_gate("smoke", g), "gate <smoke> exercised release with gateway digest")
}

# The reviewer's case: a hand-written {"stage": "loadtest", "status": "passed"} vouches for nothing.
test_hand_written_gate_without_subject_is_refused if {
	inp := json.patch(promotion_test_good, [{"op": "replace", "path": "/evidence/gates/loadtest@staging", "value": {"stage": "loadtest", "env": "staging", "status": "passed"}}])
	promotion_test_only(inp, "gate <loadtest@staging> records no subject")
}

test_simulator_run_on_other_commit_does_not_vouch_for_local_release if {
	r := object.union(promotion_test_rel, {"images_built": false})
	sim := {"kind": "simulator", "release_id": "0.0.9+gold", "commit": "deadbeef"}
	gates := object.union(promotion_test_local_gates, {"smoke": {"subject": sim}})
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": gates}, "allow_unbuilt_images": true})
	promotion_test_only(inp, "gate <smoke> exercised simulator of release 0.0.9+gold at commit deadbeef")
}

test_local_release_matched_by_id_and_commit if {
	r := object.union(promotion_test_rel, {"images_built": false})
	sim := {"kind": "simulator", "release_id": r.id, "commit": r.commit}
	g := object.union(promotion_test_gate_ok, {"subject": sim})
	gates := {"test": g, "scan": g, "smoke": g, "loadtest": object.union(g, {"stage": "loadtest", "env": "dev"}), "loadtest@staging": object.union(g, {"stage": "loadtest", "env": "staging"})}
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": gates}, "allow_unbuilt_images": true})
	count(promotion_test_denials(inp)) == 0
}

test_built_release_needs_digests_not_just_an_id if {
	g := {"status": "passed", "subject": {"kind": "simulator", "release_id": promotion_test_rel.id, "commit": "c0ffee"}}
	ds := promotion_test_denials(promotion_test_with_gate("smoke", g))
	count(ds) == 2
	every d in ds {
		contains(d, "gate <smoke> exercised simulator with")
	}
}

test_unit_tests_match_on_commit if {
	g := {"status": "passed", "subject": {"kind": "source", "commit": "c0ffee"}}
	count(promotion_test_denials(promotion_test_with_gate("test", g))) == 0
	bad := {"status": "passed", "subject": {"kind": "source", "commit": "0ther"}}
	promotion_test_only(promotion_test_with_gate("test", bad), "gate <test> ran on commit 0ther")
}

test_prod_needs_the_staging_slo_gate if {
	inp := json.remove(promotion_test_good, ["evidence/gates/loadtest@staging"])
	promotion_test_only(inp, "no passed SLO gate (loadtest) of the source env <staging>")
}

test_dev_slo_gate_does_not_count_for_prod if {
	# Re-reading the dev bundle is not enough: the dev loadtest is env dev.
	inp := json.remove(promotion_test_good, ["evidence/gates/loadtest@staging"])
	ds := promotion_test_denials(inp)
	some d in ds
	contains(d, "loadtest(env dev): passed")
}

test_failed_staging_slo_gate if {
	inp := promotion_test_with_gate("loadtest@staging", object.union(promotion_test_slo_staging, {"status": "failed"}))
	promotion_test_only(inp, "no passed SLO gate (loadtest) of the source env <staging>")
}

test_staging_slo_gate_on_other_release if {
	other := object.union(promotion_test_subject, {"vllm_digest": promotion_test_digest_a})
	inp := promotion_test_with_gate("loadtest@staging", object.union(promotion_test_slo_staging, {"subject": other}))
	promotion_test_only(inp, "gate <loadtest@staging> exercised release with vllm digest")
}

test_skipped_check_refused_for_prod if {
	inp := promotion_test_with_gate("scan", object.union(promotion_test_gate_ok, {"skipped_checks": ["image vulnerabilities"]}))
	promotion_test_only(inp, "gate <scan> skipped check <image vulnerabilities>")
}

test_skipped_check_fine_where_not_listed if {
	inp := object.union(promotion_test_with_gate("scan", object.union(promotion_test_gate_ok, {"skipped_checks": ["image vulnerabilities"]})), {"target": "staging", "source": "dev", "approvers": [], "soak": {"since": "x", "elapsed_seconds": 2000}})
	count(promotion_test_denials(inp)) == 0
}

test_self_approval_is_refused if {
	ds := promotion_test_denials(object.union(promotion_test_good, {"approvers": ["alice", "bob", "RM"]}))
	count(ds) == 1
	some d in ds
	contains(d, "approver <RM> is the promoter <rm>")
}

test_email_actor_cannot_approve_as_local_part if {
	inp := object.union(promotion_test_good, {"actor": "carol@example.com", "approvers": ["alice", "bob", "carol"]})
	promotion_test_only(inp, "approver <carol> is the promoter <carol@example.com>")
}

test_trivy_requested_but_unreadable_refuses_even_where_not_required if {
	inp := object.union(promotion_test_good, {"target": "staging", "source": "dev", "approvers": [], "soak": {"since": "x", "elapsed_seconds": 2000}, "trivy_operator": {"passed": false, "requested": true, "detail": "cannot list VulnerabilityReports"}})
	promotion_test_only(inp, "cannot list VulnerabilityReports")
}

test_evidence_for_other_release if {
	ev := {"release": object.union(promotion_test_rel, {"vllm_digest": promotion_test_digest_a}), "gates": promotion_test_good.evidence.gates}
	promotion_test_only(object.union(promotion_test_good, {"evidence": ev}), "evidence for release")
}

test_soak_not_elapsed if {
	promotion_test_only(object.union(promotion_test_good, {"soak": {"since": "x", "elapsed_seconds": 60}}), "has soaked 60s")
}

test_one_approver_is_not_enough if {
	promotion_test_only(object.union(promotion_test_good, {"approvers": ["alice", "ALICE"]}), "needs 2 distinct approvers")
}

test_self_approval_does_not_count if {
	ds := promotion_test_denials(object.union(promotion_test_good, {"approvers": ["alice", "rm"]}))
	count(ds) == 2
	some d in ds
	contains(d, "needs 2 distinct approvers")
}

test_staging_needs_no_approvers if {
	inp := object.union(promotion_test_good, {"target": "staging", "source": "dev", "approvers": [], "soak": {"since": "x", "elapsed_seconds": 2000}})
	count(promotion_test_denials(inp)) == 0
}

test_frozen_target if {
	promotion_test_only(object.union(promotion_test_good, {"freeze": {"frozen": true, "since": "t", "by": "ctl", "reason": "alert"}}), "is frozen")
}

test_deny_window if {
	w := {"window": "deny '0 18 * * 5' for 60h (UTC)", "since": "Fri 2026-11-27 18:00 UTC", "ends": "Mon 2026-11-30 06:00 UTC"}
	sw := {"active_deny": [w], "allow_defined": false, "active_allow": [], "allow_windows": []}
	promotion_test_only(object.union(promotion_test_good, {"sync_windows": sw}), "deny '0 18 * * 5' for 60h (UTC), since Fri 2026-11-27 18:00 UTC, ends Mon 2026-11-30 06:00 UTC")
}

test_outside_allow_window if {
	sw := {"active_deny": [], "allow_defined": true, "active_allow": [], "allow_windows": ["allow 0 9 * * 1-5 for 8h"]}
	promotion_test_only(object.union(promotion_test_good, {"sync_windows": sw}), "no allow sync window is active")
}

test_inside_allow_window if {
	sw := {"active_deny": [], "allow_defined": true, "active_allow": ["allow"], "allow_windows": ["allow"]}
	count(promotion_test_denials(object.union(promotion_test_good, {"sync_windows": sw}))) == 0
}

test_trivy_operator_dirty if {
	promotion_test_only(object.union(promotion_test_good, {"trivy_operator": {"passed": false, "detail": "1 CRITICAL"}}), "clean trivy-operator gate: 1 CRITICAL")
}

# A local release's gates name it by id + commit (digests are content digests, not images).
promotion_test_local_gates := {k: object.union(g, {"subject": {"kind": "simulator", "release_id": promotion_test_rel.id, "commit": promotion_test_rel.commit}}) | some k, g in promotion_test_gates}

test_unbuilt_images_refused_for_prod if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": promotion_test_local_gates}})
	promotion_test_only(inp, "no registry-built images")
}

test_unbuilt_images_allowed_with_flag if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": promotion_test_local_gates}, "allow_unbuilt_images": true})
	count(promotion_test_denials(inp)) == 0
}

test_unbuilt_images_fine_for_staging if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"target": "staging", "source": "dev", "release": r, "evidence": {"release": r, "gates": promotion_test_local_gates}})
	count(promotion_test_denials(inp)) == 0
}

test_every_unmet_rule_is_reported if {
	bad := object.union(promotion_test_good, {"approvers": [], "freeze": {"frozen": true, "since": "t", "by": "b", "reason": "r"}, "soak": {"since": "x", "elapsed_seconds": 1}})
	count(promotion_test_denials(bad)) == 3
}

# A load test on the release's gateway image with the simulator image standing in for vLLM
# (subject_match loadtest: gateway): the gateway digest must match and the stand-in be named.
promotion_test_gateway_params := object.union(promotion_test_params, {"subject_match": {"test": "commit", "loadtest": "gateway"}})

promotion_test_pod_subject(extra) := object.union(
	{"kind": "pod", "env": "dev", "gateway_digest": promotion_test_digest_a, "vllm_stand_in": "sim@sha256:c"},
	extra,
)

promotion_test_gateway_denials(subject) := ds if {
	gate := object.union(object.remove(promotion_test_slo_dev, ["subject"]), {"subject": subject})
	gates := object.union(object.remove(promotion_test_gates, ["loadtest"]), {"loadtest": gate})
	# object.union merges nested objects: drop the evidence first so the planted subject replaces the old one.
	inp := object.union(object.remove(promotion_test_good, ["evidence"]), {"target": "staging", "source": "dev", "evidence": {"release": promotion_test_rel, "gates": gates}})
	ds := deny with input as inp with data.promotion as promotion_test_gateway_params
}

test_gateway_gate_with_a_named_stand_in_passes if {
	count(promotion_test_gateway_denials(promotion_test_pod_subject({}))) == 0
}

test_gateway_gate_on_another_gateway_is_denied if {
	ds := promotion_test_gateway_denials(promotion_test_pod_subject({"gateway_digest": promotion_test_digest_b}))
	some d in ds
	contains(d, "gate <loadtest> exercised pod with gateway digest")
}

test_gateway_gate_without_a_stand_in_is_denied if {
	ds := promotion_test_gateway_denials(object.remove(promotion_test_pod_subject({}), ["vllm_stand_in"]))
	some d in ds
	contains(d, "names neither the vLLM digest it ran nor its stand-in")
}

test_gateway_gate_on_another_vllm_is_denied if {
	ds := promotion_test_gateway_denials(promotion_test_pod_subject({"vllm_digest": promotion_test_digest_a}))
	some d in ds
	contains(d, "with vllm digest")
}

# -- the model gate: a release that changes the env's model needs a passed eval of it against the env's model.
promotion_test_model_old := "sha256:0101010101010101010101010101010101010101010101010101010101010101"

promotion_test_model_new := "sha256:0202020202020202020202020202020202020202020202020202020202020202"

promotion_test_eval(verdict, candidate, baseline) := {"stage": "eval", "status": {"pass": "passed", "blocked": "failed"}[verdict], "eval": {
	"verdict": verdict,
	"candidate": {"score": 0.95, "content_digest": candidate},
	"baseline": baseline,
	"n_items": 120,
}}

promotion_test_base(digest) := {"score": 0.94, "content_digest": digest}

# The good prod request with the release carrying model `new`, prod serving `env_model`, and these eval gates.
promotion_test_model_request(env_model, evals) := inp if {
	r := object.union(promotion_test_rel, {"model_content_digest": promotion_test_model_new})
	gates := object.union(promotion_test_gates, evals)
	inp := object.union(object.remove(promotion_test_good, ["evidence", "release"]), {
		"release": r,
		"evidence": {"release": r, "gates": gates},
		"target_model": {"content_digest": env_model},
	})
}

test_model_change_with_a_passed_eval_against_the_env_model_is_allowed if {
	ev := promotion_test_eval("pass", promotion_test_model_new, promotion_test_base(promotion_test_model_old))
	count(promotion_test_denials(promotion_test_model_request(promotion_test_model_old, {"eval": ev}))) == 0
}

test_model_change_without_eval_names_both_digests if {
	inp := promotion_test_model_request(promotion_test_model_old, {})
	promotion_test_only(inp, sprintf("changes the model of <prod> from content digest %s to %s: no passed eval", [promotion_test_model_old, promotion_test_model_new]))
}

test_blocked_eval_does_not_vouch if {
	ev := promotion_test_eval("blocked", promotion_test_model_new, promotion_test_base(promotion_test_model_old))
	inp := promotion_test_model_request(promotion_test_model_old, {"eval": ev})
	promotion_test_only(inp, sprintf("eval: blocked (candidate %s, baseline %s)", [promotion_test_model_new, promotion_test_model_old]))
}

test_eval_of_another_candidate_does_not_vouch if {
	ev := promotion_test_eval("pass", promotion_test_digest_a, promotion_test_base(promotion_test_model_old))
	promotion_test_only(promotion_test_model_request(promotion_test_model_old, {"eval": ev}), "no passed eval")
}

# The ci eval compared with dev's model; prod serves another one: that eval says nothing about prod.
test_eval_against_another_baseline_does_not_vouch if {
	ev := promotion_test_eval("pass", promotion_test_model_new, promotion_test_base(promotion_test_digest_b))
	inp := promotion_test_model_request(promotion_test_model_old, {"eval": ev})
	promotion_test_only(inp, sprintf("baseline %s)", [promotion_test_digest_b]))
}

test_floor_only_eval_is_refused_where_the_env_has_a_model if {
	ev := promotion_test_eval("pass", promotion_test_model_new, null)
	promotion_test_only(promotion_test_model_request(promotion_test_model_old, {"eval": ev}), "baseline none)")
}

test_floor_only_eval_is_enough_where_the_env_has_no_model_artifact if {
	ev := promotion_test_eval("pass", promotion_test_model_new, null)
	count(promotion_test_denials(promotion_test_model_request(null, {"eval": ev}))) == 0
	promotion_test_only(promotion_test_model_request(null, {}), "from content digest none to")
}

# Any eval gate may vouch: ci's was against dev's model, the one attached for prod against prod's.
test_an_attached_eval_for_the_target_vouches_beside_a_non_matching_one if {
	ci := promotion_test_eval("pass", promotion_test_model_new, promotion_test_base(promotion_test_digest_b))
	attached := promotion_test_eval("pass", promotion_test_model_new, promotion_test_base(promotion_test_model_old))
	inp := promotion_test_model_request(promotion_test_model_old, {"eval": ci, "eval@staging": attached})
	count(promotion_test_denials(inp)) == 0
}

test_eval_gate_passed_but_verdict_blocked_does_not_vouch if {
	ev := object.union(promotion_test_eval("blocked", promotion_test_model_new, promotion_test_base(promotion_test_model_old)), {"status": "passed"})
	promotion_test_only(promotion_test_model_request(promotion_test_model_old, {"eval": ev}), "no passed eval")
}

test_same_model_needs_no_eval if {
	count(promotion_test_denials(promotion_test_model_request(promotion_test_model_new, {}))) == 0
}

test_release_without_model_artifact_cannot_replace_one if {
	inp := object.union(promotion_test_good, {"target_model": {"content_digest": promotion_test_model_old}})
	promotion_test_only(inp, sprintf("pins no model artifact (contentDigest) but <prod> serves model content digest %s", [promotion_test_model_old]))
}

test_evidence_for_another_model if {
	inp := promotion_test_model_request(promotion_test_model_new, {})
	bad := json.patch(inp, [{"op": "replace", "path": "/evidence/release/model_content_digest", "value": promotion_test_model_old}])
	promotion_test_only(bad, sprintf("evidence for release <0.1.0+gabc1234> is for model content digest %s", [promotion_test_model_old]))
}
