package main

prod_params := {"env": "prod", "min_replicas": 2, "require_pdb": true, "require_zone_spread": true, "zone_key": "topology.kubernetes.io/zone"}

pod_labels_fixture := {"app": "llm"}

deployment(replicas, spread) := {
	"kind": "Deployment",
	"metadata": {"name": "llm"},
	"spec": {"replicas": replicas, "template": {"metadata": {"labels": pod_labels_fixture}, "spec": {"containers": [], "topologySpreadConstraints": spread}}},
}

hard_spread := [{"topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1}]

pdb_fixture := {"kind": "PodDisruptionBudget", "metadata": {"name": "llm"}, "spec": {"selector": {"matchLabels": pod_labels_fixture}}}

test_prod_shape_passes if {
	count(availability_violations) == 0 with input as {"items": [deployment(3, hard_spread), pdb_fixture]} with data.params as prod_params
}

test_single_replica_denied if {
	availability_violations["Deployment <llm> runs at least 1 replica(s); prod requires at least 2"] with input as {"items": [deployment(1, hard_spread), pdb_fixture]}
		with data.params as prod_params
}

test_autoscaler_minimum_counts if {
	so := {"kind": "ScaledObject", "metadata": {"name": "llm"}, "spec": {"scaleTargetRef": {"name": "llm"}, "minReplicaCount": 3}}
	count(availability_violations) == 0 with input as {"items": [deployment(1, hard_spread), so, pdb_fixture]}
		with data.params as prod_params
}

test_missing_pdb_denied if {
	availability_violations["Deployment <llm> has no PodDisruptionBudget selecting its pods"] with input as {"items": [deployment(3, hard_spread)]}
		with data.params as prod_params
}

test_soft_spread_denied if {
	some msg in availability_violations with input as {"items": [deployment(3, [{"topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]), pdb_fixture]}
		with data.params as prod_params
	contains(msg, "whenUnsatisfiable: DoNotSchedule")
}

test_dev_relaxed if {
	count(availability_violations) == 0 with input as {"items": [deployment(1, [])]}
		with data.params as {"env": "dev", "min_replicas": 1, "require_pdb": false, "require_zone_spread": false}
}

test_rollout_needs_pdb_like_a_deployment if {
	rollout := object.union(deployment(3, hard_spread), {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout"})
	availability_violations["Rollout <llm> has no PodDisruptionBudget selecting its pods"] with input as {"items": [rollout]}
		with data.params as prod_params
	count(availability_violations) == 0 with input as {"items": [rollout, pdb_fixture]} with data.params as prod_params
}
