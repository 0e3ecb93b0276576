package main

probe_fixture := {"httpGet": {"path": "/health", "port": 8000}}

probed(container) := {"items": [{
	"kind": "Deployment",
	"metadata": {"name": "llm"},
	"spec": {"template": {"spec": {"containers": [container]}}},
}]}

test_all_probes_pass if {
	count(probes_violations) == 0 with input as probed({"name": "vllm", "readinessProbe": probe_fixture, "livenessProbe": probe_fixture, "startupProbe": probe_fixture})
		with data.params as {"slow_start_containers": ["vllm"]}
}

test_missing_readiness_denied if {
	probes_violations["container <gateway> in Deployment <llm> has no readinessProbe"] with input as probed({"name": "gateway", "livenessProbe": probe_fixture})
		with data.params as {"slow_start_containers": []}
}

test_missing_startup_denied if {
	probes_violations["container <vllm> in Deployment <llm> loads a model but has no startupProbe"] with input as probed({"name": "vllm", "readinessProbe": probe_fixture, "livenessProbe": probe_fixture})
		with data.params as {"slow_start_containers": ["vllm"]}
}

test_jobs_exempt if {
	count(probes_violations) == 0 with input as {"items": [{"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}]}
		with data.params as {"slow_start_containers": []}
}
