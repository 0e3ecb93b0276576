package main

res_params := {
	"required_requests": ["cpu", "memory"],
	"required_limits": ["cpu", "memory"],
	"gpu_containers": ["vllm"],
	"gpu_resource": "nvidia.com/gpu",
}

with_resources(name, resources) := {"items": [{
	"kind": "Deployment",
	"metadata": {"name": "llm"},
	"spec": {"template": {"spec": {"containers": [{"name": name, "resources": resources}]}}},
}]}

full := {
	"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1},
	"limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": 1},
}

test_complete_resources_pass if {
	count(resources_violations) == 0 with input as with_resources("vllm", full) with data.params as res_params
}

test_missing_memory_limit_denied if {
	resources_violations["container <gateway> in Deployment <llm> has no resources.limits.memory"] with input as with_resources("gateway", {
		"requests": {"cpu": "1", "memory": "1Gi"},
		"limits": {"cpu": "1"},
	})
		with data.params as res_params
}

test_missing_gpu_limit_denied if {
	resources_violations["container <vllm> in Deployment <llm> has no resources.limits.nvidia.com/gpu"] with input as with_resources("vllm", {
		"requests": {"cpu": "1", "memory": "1Gi"},
		"limits": {"cpu": "1", "memory": "1Gi"},
	})
		with data.params as res_params
}

test_gpu_request_limit_mismatch_denied if {
	some msg in resources_violations with input as with_resources("vllm", {
		"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1},
		"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 2},
	})
		with data.params as res_params
	contains(msg, "requests 1 nvidia.com/gpu but limits 2")
}
