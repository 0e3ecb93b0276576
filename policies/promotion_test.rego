package main

import rego.v1

# A release every test starts from; each test breaks one thing and expects exactly that denial.
promotion_test_digest_a := "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

promotion_test_digest_b := "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

promotion_test_rel := {
	"id": "0.1.0+gabc1234",
	"gateway_digest": promotion_test_digest_a,
	"vllm_digest": promotion_test_digest_b,
	"model_revision": "main",
	"images_built": true,
}

promotion_test_gate_ok := {"status": "passed", "digests": {"gateway": promotion_test_digest_a, "vllm": promotion_test_digest_b}}

promotion_test_good := {
	"kind": "PromotionRequest",
	"target": "prod",
	"source": "staging",
	"actor": "rm",
	"release": promotion_test_rel,
	"evidence": {"release": promotion_test_rel, "gates": {"test": promotion_test_gate_ok, "scan": promotion_test_gate_ok, "smoke": promotion_test_gate_ok, "loadtest": promotion_test_gate_ok}},
	"soak": {"since": "2026-01-01T00:00:00Z", "elapsed_seconds": 100000},
	"approvers": ["alice", "bob"],
	"freeze": {"frozen": false},
	"sync_windows": {"active_deny": [], "allow_defined": false, "active_allow": [], "allow_windows": []},
	"trivy_operator": {"passed": true, "detail": "clean"},
	"allow_unbuilt_images": false,
}

promotion_test_params := {
	"allowed_sources": {"dev": ["ci"], "staging": ["dev"], "prod": ["staging"]},
	"required_gates": ["test", "scan", "smoke", "loadtest"],
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

test_failed_gate if {
	ev := {"release": promotion_test_rel, "gates": {"test": promotion_test_gate_ok, "scan": object.union(promotion_test_gate_ok, {"status": "failed"}), "smoke": promotion_test_gate_ok, "loadtest": promotion_test_gate_ok}}
	promotion_test_only(object.union(promotion_test_good, {"evidence": ev}), "gate <scan> is failed")
}

test_gate_on_other_digest if {
	other := {"status": "passed", "digests": {"gateway": promotion_test_digest_b, "vllm": promotion_test_digest_b}}
	ev := {"release": promotion_test_rel, "gates": {"test": promotion_test_gate_ok, "scan": promotion_test_gate_ok, "smoke": other, "loadtest": promotion_test_gate_ok}}
	promotion_test_only(object.union(promotion_test_good, {"evidence": ev}), "gate <smoke> ran on gateway digest")
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
	promotion_test_only(object.union(promotion_test_good, {"approvers": ["alice", "rm"]}), "needs 2 distinct approvers")
}

test_staging_needs_no_approvers if {
	inp := object.union(promotion_test_good, {"target": "staging", "source": "dev", "approvers": [], "soak": {"since": "x", "elapsed_seconds": 2000}})
	count(promotion_test_denials(inp)) == 0
}

test_frozen_target if {
	promotion_test_only(object.union(promotion_test_good, {"freeze": {"frozen": true, "since": "t", "by": "ctl", "reason": "alert"}}), "is frozen")
}

test_deny_window if {
	sw := {"active_deny": ["deny 0 22 * * * for 8h"], "allow_defined": false, "active_allow": [], "allow_windows": []}
	promotion_test_only(object.union(promotion_test_good, {"sync_windows": sw}), "deny sync window is active")
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

test_unbuilt_images_refused_for_prod if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": promotion_test_good.evidence.gates}})
	promotion_test_only(inp, "no registry-built images")
}

test_unbuilt_images_allowed_with_flag if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"release": r, "evidence": {"release": r, "gates": promotion_test_good.evidence.gates}, "allow_unbuilt_images": true})
	count(promotion_test_denials(inp)) == 0
}

test_unbuilt_images_fine_for_staging if {
	r := object.union(promotion_test_rel, {"images_built": false})
	inp := object.union(promotion_test_good, {"target": "staging", "source": "dev", "release": r, "evidence": {"release": r, "gates": promotion_test_good.evidence.gates}})
	count(promotion_test_denials(inp)) == 0
}

test_every_unmet_rule_is_reported if {
	bad := object.union(promotion_test_good, {"approvers": [], "freeze": {"frozen": true, "since": "t", "by": "b", "reason": "r"}, "soak": {"since": "x", "elapsed_seconds": 1}})
	count(promotion_test_denials(bad)) == 3
}
