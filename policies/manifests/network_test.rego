package main

np_labels := {"app": "llm"}

np_workload := {"kind": "Deployment", "metadata": {"name": "llm"}, "spec": {"template": {"metadata": {"labels": np_labels}, "spec": {"containers": []}}}}

netpol(types) := {"kind": "NetworkPolicy", "metadata": {"name": "llm"}, "spec": {"podSelector": {"matchLabels": np_labels}, "policyTypes": types}}

test_isolated_passes if count(network_violations) == 0 with input as {"items": [np_workload, netpol(["Ingress", "Egress"])]}

test_missing_policy_denied if {
	network_violations["Deployment <llm> is not selected by a NetworkPolicy with policyTypes [Ingress, Egress]"] with input as {"items": [np_workload]}
}

test_ingress_only_denied if {
	count(network_violations) == 1 with input as {"items": [np_workload, netpol(["Ingress"])]}
}

# Exposure vs NetworkPolicy.
np_service := {"kind": "Service", "metadata": {"name": "llm"}, "spec": {"selector": np_labels}}

from_ns(name) := {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

netpol_from(namespaces) := {"kind": "NetworkPolicy", "metadata": {"name": "llm"}, "spec": {
	"podSelector": {"matchLabels": np_labels},
	"policyTypes": ["Ingress", "Egress"],
	"ingress": [{"from": [from_ns(n) | some n in namespaces], "ports": [{"port": "http"}]}],
}}

ingress_obj := {"kind": "Ingress", "metadata": {"name": "llm", "annotations": {"llm.example.com/data-plane-namespace-labels": "{\"kubernetes.io/metadata.name\":\"ingress-nginx\"}"}}, "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "llm"}}}]}}]}}

route := {"kind": "HTTPRoute", "metadata": {"name": "llm"}, "spec": {"rules": [{"backendRefs": [{"name": "llm", "port": 80}]}]}}

exposure_input(objs) := {"kind": "List", "items": array.concat([np_workload, np_service], objs)}

test_route_admitted_passes if {
	count(network_violations) == 0 with input as exposure_input([route, netpol_from(["gateway-system"])])
}

test_route_into_ingress_nginx_only_policy_denied if {
	network_violations[`HTTPRoute <llm> routes traffic from namespaces labelled {"kubernetes.io/metadata.name": "gateway-system"} to Deployment <llm>, but no NetworkPolicy selecting its pods admits them; allow that namespace (networkPolicy.*NamespaceLabels)`] with input as exposure_input([route, netpol_from(["ingress-nginx"])])
}

test_ingress_annotation_names_the_data_plane if {
	count(network_violations) == 0 with input as exposure_input([ingress_obj, netpol_from(["ingress-nginx"])])
	count(network_violations) == 1 with input as exposure_input([ingress_obj, netpol_from(["gateway-system"])])
}

test_data_plane_from_data if {
	count(network_violations) == 0 with input as exposure_input([route, netpol_from(["envoy-gateway-system"])])
		with data.params as {"exposure_data_plane_labels": {"HTTPRoute": {"kubernetes.io/metadata.name": "envoy-gateway-system"}}}
}

test_exposure_checked_only_on_whole_sets if {
	count(network_violations) == 0 with input as route
}
