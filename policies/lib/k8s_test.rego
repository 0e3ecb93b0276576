package lib.k8s

deploy := {
	"kind": "Deployment",
	"metadata": {"name": "d"},
	"spec": {"template": {
		"metadata": {"labels": {"app": "a", "tier": "t"}},
		"spec": {"containers": [{"name": "c"}], "initContainers": [{"name": "i"}]},
	}},
}

test_name if name(deploy) == "Deployment <d>"

test_containers_include_init if count(containers(deploy)) == 2

test_workloads_skip_services if {
	count(workloads) == 1 with input as {"items": [deploy, {"kind": "Service", "metadata": {"name": "s"}}]}
}

test_selects_subset if selects({"matchLabels": {"app": "a"}}, pod_labels(deploy))

test_selects_mismatch if not selects({"matchLabels": {"app": "b"}}, pod_labels(deploy))
