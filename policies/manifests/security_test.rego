package main

sec_params := {"writable_root_containers": []}

good_sc := {
	"allowPrivilegeEscalation": false,
	"readOnlyRootFilesystem": true,
	"runAsNonRoot": true,
	"capabilities": {"drop": ["ALL"]},
	"seccompProfile": {"type": "RuntimeDefault"},
}

workload(container_sc, extra_spec) := {"items": [{
	"kind": "Deployment",
	"metadata": {"name": "llm"},
	"spec": {"template": {"spec": object.union(
		{"automountServiceAccountToken": false, "containers": [{"name": "vllm", "securityContext": container_sc}]},
		extra_spec,
	)}},
}]}

test_hardened_passes if {
	count(security_violations) == 0 with input as workload(good_sc, {}) with data.params as sec_params
}

test_privileged_denied if {
	security_violations["container <vllm> in Deployment <llm> is privileged"] with input as workload(object.union(good_sc, {"privileged": true}), {})
		with data.params as sec_params
}

test_escalation_denied if {
	security_violations["container <vllm> in Deployment <llm> does not set allowPrivilegeEscalation: false"] with input as workload(object.remove(good_sc, ["allowPrivilegeEscalation"]), {})
		with data.params as sec_params
}

test_root_denied if {
	some msg in security_violations with input as workload(object.remove(good_sc, ["runAsNonRoot"]), {}) with data.params as sec_params
	contains(msg, "may run as root")
}

test_pod_level_non_root_accepted if {
	count(security_violations) == 0 with input as workload(object.remove(good_sc, ["runAsNonRoot"]), {"securityContext": {"runAsNonRoot": true}})
		with data.params as sec_params
}

test_capabilities_denied if {
	some msg in security_violations with input as workload(object.union(good_sc, {"capabilities": {"drop": ["NET_RAW"], "add": ["SYS_ADMIN"]}}), {})
		with data.params as sec_params
	contains(msg, "adds capability SYS_ADMIN")
}

test_seccomp_denied if {
	some msg in security_violations with input as workload(object.remove(good_sc, ["seccompProfile"]), {}) with data.params as sec_params
	contains(msg, "seccomp profile unset")
}

test_writable_root_denied if {
	some msg in security_violations with input as workload(object.remove(good_sc, ["readOnlyRootFilesystem"]), {}) with data.params as sec_params
	contains(msg, "writable root filesystem")
}

test_writable_root_exception if {
	count(security_violations) == 0 with input as workload(object.remove(good_sc, ["readOnlyRootFilesystem"]), {})
		with data.params as {"writable_root_containers": ["vllm"]}
}

test_host_network_and_host_path_denied if {
	denials := security_violations with input as workload(good_sc, {"hostNetwork": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
		with data.params as sec_params
	denials["Deployment <llm> sets hostNetwork: true"]
	denials["Deployment <llm> mounts hostPath volume <root>"]
}

test_token_automount_denied if {
	some msg in security_violations with input as workload(good_sc, {"automountServiceAccountToken": true}) with data.params as sec_params
	contains(msg, "mounts a ServiceAccount token")
}

test_service_account_automount_denied if {
	security_violations["ServiceAccount <llm> does not set automountServiceAccountToken: false"] with input as {"items": [{"kind": "ServiceAccount", "metadata": {"name": "llm"}}]}
		with data.params as sec_params
}
