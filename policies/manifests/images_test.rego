package main

image_params := {"env": "dev", "require_digests": false, "allowed_registries": ["registry.example.com/"]}

pod(image) := {"items": [{
	"kind": "Deployment",
	"metadata": {"name": "llm"},
	"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}},
}]}

test_tagged_image_passes if {
	count(images_violations) == 0 with input as pod("registry.example.com/llm/vllm:0.1.0") with data.params as image_params
}

test_latest_denied if {
	images_violations["container <vllm> in Deployment <llm> uses the latest tag (registry.example.com/llm/vllm:latest); pin a version or digest"] with input as pod("registry.example.com/llm/vllm:latest")
		with data.params as image_params
}

test_untagged_denied if {
	some msg in images_violations with input as pod("registry.example.com:5000/llm/vllm") with data.params as image_params
	contains(msg, "untagged")
}

test_digest_required if {
	some msg in images_violations with input as pod("registry.example.com/llm/vllm:0.1.0")
		with data.params as object.union(image_params, {"require_digests": true, "env": "prod"})
	contains(msg, "prod requires digests")
}

test_digest_accepted if {
	img := concat("", ["registry.example.com/llm/vllm@sha256:", concat("", [x | some _ in numbers.range(1, 64); x := "a"])])
	count(images_violations) == 0 with input as pod(img) with data.params as object.union(image_params, {"require_digests": true})
}

test_foreign_registry_denied if {
	some msg in images_violations with input as pod("docker.io/vllm/vllm-openai:v0.6.0") with data.params as image_params
	contains(msg, "outside the allowed registries")
}
