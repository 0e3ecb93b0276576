# Policy parameters, the way conftest/OPA and the pipeline both pass them.
#
#   value("allowed_registries") looks in, first hit wins:
#     1. data.params               the pipeline (defaults + the target's entry, flattened), or a
#                                  conftest --data file with a top-level `params:` key;
#     2. data.environments[env]    conftest --data policies/params.yaml (its per-target entries);
#     3. data.defaults             conftest --data policies/params.yaml (its defaults);
#     4. builtin                   below: the same defaults, so a policy never silently reads
#                                  an undefined parameter (tests/policies checks they agree).
#   env: data.params.env, else data.env, else "argocd" for Argo CD objects, else the
#   <label_domain>/environment label the documents agree on, else "unknown".
# label_domain (platform.yaml labelDomain) is read without `env` (which depends on it): params,
# then defaults, then builtin.
package lib.params

import data.lib.k8s

builtin := {
	"label_domain": "llm.example.com",
	"allowed_registries": ["registry.example.com/"],
	"require_digests": false,
	"required_requests": ["cpu", "memory"],
	"required_limits": ["cpu", "memory"],
	"gpu_containers": ["vllm"],
	"gpu_resource": "nvidia.com/gpu",
	"slow_start_containers": ["vllm"],
	"writable_root_containers": [],
	"min_replicas": 1,
	"require_pdb": false,
	"require_zone_spread": false,
	"zone_key": "topology.kubernetes.io/zone",
	"required_labels": [
		"app.kubernetes.io/name",
		"app.kubernetes.io/instance",
		"app.kubernetes.io/version",
		"app.kubernetes.io/component",
		"app.kubernetes.io/part-of",
		"app.kubernetes.io/managed-by",
	],
	"secret_env_pattern": `(?i)(token|secret|password|passwd|api_?key|hash_key|private_key)$`,
	"alert_annotations": ["summary", "description", "runbook_url"],
	"alert_severities": ["info", "warning", "critical"],
	"rollback_alerts": ["LLMErrorBudgetBurnFast"],
	"rollback_envs_required": ["staging", "prod"],
	"tracking_labels": ["app.kubernetes.io/instance"],
	"owned_selector_labels": ["app.kubernetes.io/name", "llm.example.com/instance"],
	"exposure_data_plane_labels": {
		"Ingress": {"kubernetes.io/metadata.name": "ingress-nginx"},
		"HTTPRoute": {"kubernetes.io/metadata.name": "gateway-system"},
	},
	"pinned_envs": ["prod"],
	"pinned_revision_pattern": `^([0-9a-f]{40}|v[0-9]+\.[0-9]+\.[0-9]+)$`,
	"chart_repos": ["registry.example.com/llm/charts"],
	"chart_version_pattern": `^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?$`,
	"forbidden_projects": ["default"],
}

label_domain := d if {
	d := data.params.label_domain
} else := d if {
	d := data.defaults.label_domain
} else := builtin.label_domain

# label("environment") = "<label_domain>/environment": a label or annotation key the charts own.
label(key) := concat("/", [label_domain, key])

labelled_envs contains e if {
	some obj in k8s.objects
	e := obj.metadata.labels[label("environment")]
}

# Argo CD's own kinds; argoproj.io also holds Argo Rollouts' Rollout/AnalysisTemplate, which belong to an env.
argocd_kinds := {"Application", "ApplicationSet", "AppProject"}

argocd_objects if {
	some obj in k8s.objects
	startswith(object.get(obj, "apiVersion", ""), "argoproj.io/")
	obj.kind in argocd_kinds
}

env := e if {
	e := data.params.env
} else := e if {
	e := data.env
} else := "argocd" if {
	argocd_objects
} else := e if {
	count(labelled_envs) == 1
	some e in labelled_envs
} else := "unknown"

value(name) := v if {
	v := data.params[name]
} else := v if {
	v := data.environments[env][name]
} else := v if {
	v := data.defaults[name]
} else := builtin[name]
