# Availability: enough replicas for the env (counting autoscaler minimums), a PDB covering each
# Deployment (or Rollout), and a hard zone spread where the env requires it.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on availability_violations so policies stay independent.
deny contains msg if some msg in availability_violations

# Autoscaler objects (HPA or KEDA ScaledObject) pointing at a Deployment, with their minimum.
autoscaler_min(name) := m if {
	some hpa in k8s.objects_of_kind("HorizontalPodAutoscaler")
	hpa.spec.scaleTargetRef.name == name
	m := object.get(hpa.spec, "minReplicas", 1)
}

autoscaler_min(name) := m if {
	some so in k8s.objects_of_kind("ScaledObject")
	so.spec.scaleTargetRef.name == name
	m := object.get(so.spec, "minReplicaCount", 0)
}

min_replicas(obj) := autoscaler_min(obj.metadata.name)

min_replicas(obj) := object.get(obj.spec, "replicas", 1) if not autoscaler_min(obj.metadata.name)

availability_violations contains msg if {
	k8s.whole_set
	some obj in k8s.objects
	obj.kind in k8s.replicated_kinds
	min_replicas(obj) < params.value("min_replicas")
	msg := sprintf("%s runs at least %d replica(s); %s requires at least %d", [k8s.name(obj), min_replicas(obj), params.env, params.value("min_replicas")])
}

availability_violations contains msg if {
	params.value("require_pdb")
	k8s.whole_set
	some obj in k8s.objects
	obj.kind in k8s.replicated_kinds
	not covered_by_pdb(obj)
	msg := sprintf("%s has no PodDisruptionBudget selecting its pods", [k8s.name(obj)])
}

covered_by_pdb(obj) if {
	some pdb in k8s.objects_of_kind("PodDisruptionBudget")
	k8s.selects(pdb.spec.selector, k8s.pod_labels(obj))
}

availability_violations contains msg if {
	params.value("require_zone_spread")
	some obj in k8s.objects
	obj.kind in k8s.replicated_kinds
	not hard_zone_spread(obj)
	msg := sprintf("%s has no topologySpreadConstraint on %s with whenUnsatisfiable: DoNotSchedule", [k8s.name(obj), params.value("zone_key")])
}

hard_zone_spread(obj) if {
	some tsc in object.get(k8s.pod_spec(obj), "topologySpreadConstraints", [])
	tsc.topologyKey == params.value("zone_key")
	tsc.whenUnsatisfiable == "DoNotSchedule"
}
