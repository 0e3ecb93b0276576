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
