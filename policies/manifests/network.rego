# Network: every workload is selected by a NetworkPolicy that governs both directions
# (policyTypes Ingress and Egress), so anything not explicitly allowed is denied.
package main

import data.lib.k8s

# conftest/OPA entry point; tests assert on network_violations so policies stay independent.
deny contains msg if some msg in network_violations

default_deny(np) if {
	"Ingress" in np.spec.policyTypes
	"Egress" in np.spec.policyTypes
}

isolated(obj) if {
	some np in k8s.objects_of_kind("NetworkPolicy")
	default_deny(np)
	k8s.selects(np.spec.podSelector, k8s.pod_labels(obj))
}

network_violations contains msg if {
	some obj in k8s.workloads
	not isolated(obj)
	msg := sprintf("%s is not selected by a NetworkPolicy with policyTypes [Ingress, Egress]", [k8s.name(obj)])
}
