package lib.params

pod := {"kind": "Deployment", "metadata": {"name": "d", "labels": {"llm.example.com/environment": "prod"}}}

yaml_data := {
	"defaults": {"require_digests": false, "min_replicas": 1},
	"environments": {"prod": {"require_digests": true}, "argocd": {"required_labels": ["x"]}},
}

test_pipeline_params_win if {
	value("min_replicas") == 3 with data.params as {"min_replicas": 3} with data.defaults as {"min_replicas": 1}
}

test_false_is_a_value_not_a_miss if {
	value("require_digests") == false with data.params as {"require_digests": false}
		with data.defaults as {"require_digests": true}
}

test_conftest_params_yaml_env_from_labels if {
	value("require_digests") == true with input as pod with data.defaults as yaml_data.defaults
		with data.environments as yaml_data.environments
}

test_conftest_params_yaml_defaults if {
	value("min_replicas") == 1 with input as pod with data.defaults as yaml_data.defaults
		with data.environments as yaml_data.environments
}

test_argocd_objects_select_the_argocd_entry if {
	value("required_labels") == ["x"] with input as {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "a"}}
		with data.defaults as yaml_data.defaults
		with data.environments as yaml_data.environments
}

test_builtin_without_any_data if {
	value("gpu_resource") == "nvidia.com/gpu" with input as pod
	env == "prod" with input as pod
}

test_env_unknown_when_labels_disagree if {
	other := object.union(pod, {"metadata": {"name": "e", "labels": {"llm.example.com/environment": "dev"}}})
	env == "unknown" with input as {"kind": "List", "items": [pod, other]}
}

test_explicit_env_wins if env == "staging" with input as pod with data.env as "staging"

test_argo_rollouts_objects_keep_their_env if {
	rollout := {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r", "labels": {"llm.example.com/environment": "prod"}}}
	env == "prod" with input as rollout
}
