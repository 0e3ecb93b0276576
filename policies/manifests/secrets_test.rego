package main

secret_params := {"secret_env_pattern": "(?i)(token|secret|password|api_?key|hash_key)$"}

env_workload(env) := {"items": [{"kind": "Deployment", "metadata": {"name": "llm"}, "spec": {"template": {"spec": {"containers": [{"name": "gateway", "env": env}]}}}}]}

test_inline_secret_denied if {
	some msg in secrets_violations with input as {"items": [{"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}]}
		with data.params as secret_params
	msg == "Secret <s> carries inline stringData; deliver it with an ExternalSecret or an existing Secret"
}

test_literal_secret_env_denied if {
	some msg in secrets_violations with input as env_workload([{"name": "GATEWAY_AUDIT_HASH_KEY", "value": "x"}]) with data.params as secret_params
	contains(msg, "GATEWAY_AUDIT_HASH_KEY to a literal value")
}

test_secret_ref_passes if {
	ref := {"secretKeyRef": {"name": "s", "key": "k"}}
	count(secrets_violations) == 0 with input as env_workload([{"name": "HF_TOKEN", "valueFrom": ref}, {"name": "HOME", "value": "/tmp"}])
		with data.params as secret_params
}
