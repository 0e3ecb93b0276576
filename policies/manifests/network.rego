# Network: every workload is selected by a NetworkPolicy that governs both directions
# (policyTypes Ingress and Egress), so anything not explicitly allowed is denied.
package main

import data.lib.k8s
import data.lib.params

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
	k8s.whole_set
	some obj in k8s.workloads
	not isolated(obj)
	msg := sprintf("%s is not selected by a NetworkPolicy with policyTypes [Ingress, Egress]", [k8s.name(obj)])
}

# Exposure vs NetworkPolicy: the data plane behind each Ingress or HTTPRoute (ingress-nginx's
# namespace, the Gateway API implementation's) must be admitted by a NetworkPolicy selecting the
# exposed pods, or the exposure routes into a deny. Its namespace labels come from the object's
# <label_domain>/data-plane-namespace-labels annotation (JSON, set by the chart from the same
# values as the NetworkPolicy), else data `exposure_data_plane_labels[<kind>]`.
data_plane_annotation := params.label("data-plane-namespace-labels")

exposures contains obj if {
	some obj in k8s.objects
	obj.kind in {"Ingress", "HTTPRoute"}
}

backend_services(obj) := {name |
	some rule in object.get(obj.spec, "rules", [])
	some path in object.get(rule, ["http", "paths"], [])
	name := path.backend.service.name
} | {name | name := obj.spec.defaultBackend.service.name} if obj.kind == "Ingress"

backend_services(obj) := {ref.name |
	some rule in object.get(obj.spec, "rules", [])
	some ref in object.get(rule, "backendRefs", [])
	object.get(ref, "kind", "Service") == "Service"
} if obj.kind == "HTTPRoute"

data_plane_labels(obj) := json.unmarshal(obj.metadata.annotations[data_plane_annotation]) if {
	obj.metadata.annotations[data_plane_annotation]
} else := params.value("exposure_data_plane_labels")[obj.kind]

# Workloads whose pods a Service named `name` selects.
exposed_workloads(name) := {obj |
	some svc in k8s.objects_of_kind("Service")
	svc.metadata.name == name
	count(object.get(svc.spec, "selector", {})) > 0
	some obj in k8s.workloads
	k8s.selects({"matchLabels": svc.spec.selector}, k8s.pod_labels(obj))
}

ingress_policies(obj) := [np |
	some np in k8s.objects_of_kind("NetworkPolicy")
	"Ingress" in object.get(np.spec, "policyTypes", ["Ingress"])
	k8s.selects(np.spec.podSelector, k8s.pod_labels(obj))
]

# A peer admits a namespace carrying `labels`: every matchLabels pair of its namespaceSelector is
# among them, and no podSelector narrows it to other pods.
peer_admits(peer, labels) if {
	peer.namespaceSelector
	count(object.get(peer, ["podSelector", "matchLabels"], {})) == 0
	every k, v in object.get(peer.namespaceSelector, "matchLabels", {}) {
		labels[k] == v
	}
}

admits(np, labels) if {
	some rule in object.get(np.spec, "ingress", [])
	not rule.from
}

admits(np, labels) if {
	some rule in object.get(np.spec, "ingress", [])
	some peer in rule.from
	peer_admits(peer, labels)
}

network_violations contains msg if {
	k8s.whole_set
	some exposure in exposures
	labels := data_plane_labels(exposure)
	some name in backend_services(exposure)
	some obj in exposed_workloads(name)
	policies := ingress_policies(obj)
	count(policies) > 0
	not any_admits(policies, labels)
	msg := sprintf("%s routes traffic from namespaces labelled %v to %s, but no NetworkPolicy selecting its pods admits them; allow that namespace (networkPolicy.*NamespaceLabels)", [k8s.name(exposure), labels, k8s.name(obj)])
}

any_admits(policies, labels) if {
	some np in policies
	admits(np, labels)
}
