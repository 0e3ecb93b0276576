# Every policy denies under each input shape conftest/OPA and the pipeline use:
#   one document            `conftest test FILE` evaluates documents one at a time
#   --combine               `conftest test --combine`: [{"path": ..., "contents": <doc or docs>}]
#   List                    the pipeline's render stage: {"kind": "List", "items": [...]}
# Checks that need several objects (NetworkPolicy/PDB coverage, exposure vs NetworkPolicy, the
# rollback alert being rendered) run on --combine and List only.
package main

shape_labels := {
	"app.kubernetes.io/name": "llm",
	"app.kubernetes.io/instance": "llm",
	"app.kubernetes.io/version": "1",
	"app.kubernetes.io/component": "server",
	"app.kubernetes.io/part-of": "llm-platform",
	"app.kubernetes.io/managed-by": "Helm",
	"llm.example.com/environment": "prod",
}

bad_deployment := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "bad", "labels": shape_labels},
	"spec": {"replicas": 1, "template": {
		"metadata": {"labels": {"app": "bad"}},
		"spec": {"containers": [{"name": "vllm", "image": "docker.io/evil/vllm:latest", "securityContext": {"privileged": true}}]},
	}},
}

bad_rule := {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "r", "labels": shape_labels}, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x", "labels": {"severity": "page"}}]}]}}

bad_app := {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "a", "labels": {"app.kubernetes.io/part-of": "x", "app.kubernetes.io/managed-by": "y"}}, "spec": {"project": "default"}}

bad_secret := {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": shape_labels}, "data": {"k": "dg=="}}

unlabelled := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}

bad_monitor := {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m", "labels": shape_labels}, "spec": {"selector": {"matchLabels": {"app.kubernetes.io/instance": "llm"}}}}

single(doc) := doc

combined(doc) := [{"path": "rendered.yaml", "contents": doc}]

listed(doc) := {"kind": "List", "items": [doc]}

# Each shape of each bad document denies in its policy and through conftest's `deny`.
test_images_every_shape if {
	count(images_violations) > 0 with input as single(bad_deployment)
	count(images_violations) > 0 with input as combined(bad_deployment)
	count(images_violations) > 0 with input as listed(bad_deployment)
	count(deny) > 0 with input as single(bad_deployment)
	count(deny) > 0 with input as combined(bad_deployment)
}

test_security_every_shape if {
	count(security_violations) > 0 with input as single(bad_deployment)
	count(security_violations) > 0 with input as combined(bad_deployment)
	count(security_violations) > 0 with input as listed(bad_deployment)
	count(deny) > 0 with input as single(bad_deployment)
	count(deny) > 0 with input as combined(bad_deployment)
}

test_resources_every_shape if {
	count(resources_violations) > 0 with input as single(bad_deployment)
	count(resources_violations) > 0 with input as combined(bad_deployment)
	count(resources_violations) > 0 with input as listed(bad_deployment)
	count(deny) > 0 with input as single(bad_deployment)
	count(deny) > 0 with input as combined(bad_deployment)
}

test_probes_every_shape if {
	count(probes_violations) > 0 with input as single(bad_deployment)
	count(probes_violations) > 0 with input as combined(bad_deployment)
	count(probes_violations) > 0 with input as listed(bad_deployment)
	count(deny) > 0 with input as single(bad_deployment)
	count(deny) > 0 with input as combined(bad_deployment)
}

# require_zone_spread from policies/params.yaml's layout (defaults + prod entry); env from the prod label.
test_availability_every_shape if {
	count(availability_violations) > 0 with input as single(bad_deployment) with data.defaults as {"require_zone_spread": false} with data.environments as {"prod": {"require_zone_spread": true}}
	count(availability_violations) > 0 with input as combined(bad_deployment) with data.defaults as {"require_zone_spread": false} with data.environments as {"prod": {"require_zone_spread": true}}
	count(availability_violations) > 0 with input as listed(bad_deployment) with data.defaults as {"require_zone_spread": false} with data.environments as {"prod": {"require_zone_spread": true}}
	count(deny) > 0 with input as single(bad_deployment) with data.defaults as {"require_zone_spread": false} with data.environments as {"prod": {"require_zone_spread": true}}
	count(deny) > 0 with input as combined(bad_deployment) with data.defaults as {"require_zone_spread": false} with data.environments as {"prod": {"require_zone_spread": true}}
}

test_alerts_every_shape if {
	count(alerts_violations) > 0 with input as single(bad_rule)
	count(alerts_violations) > 0 with input as combined(bad_rule)
	count(alerts_violations) > 0 with input as listed(bad_rule)
	count(deny) > 0 with input as single(bad_rule)
	count(deny) > 0 with input as combined(bad_rule)
}

test_argocd_every_shape if {
	count(argocd_violations) > 0 with input as single(bad_app)
	count(argocd_violations) > 0 with input as combined(bad_app)
	count(argocd_violations) > 0 with input as listed(bad_app)
	count(deny) > 0 with input as single(bad_app)
	count(deny) > 0 with input as combined(bad_app)
}

test_secrets_every_shape if {
	count(secrets_violations) > 0 with input as single(bad_secret)
	count(secrets_violations) > 0 with input as combined(bad_secret)
	count(secrets_violations) > 0 with input as listed(bad_secret)
	count(deny) > 0 with input as single(bad_secret)
	count(deny) > 0 with input as combined(bad_secret)
}

test_labels_every_shape if {
	count(labels_violations) > 0 with input as single(unlabelled)
	count(labels_violations) > 0 with input as combined(unlabelled)
	count(labels_violations) > 0 with input as listed(unlabelled)
	count(deny) > 0 with input as single(unlabelled)
	count(deny) > 0 with input as combined(unlabelled)
}

test_tracking_every_shape if {
	count(tracking_violations) > 0 with input as single(bad_monitor)
	count(tracking_violations) > 0 with input as combined(bad_monitor)
	count(tracking_violations) > 0 with input as listed(bad_monitor)
	count(deny) > 0 with input as single(bad_monitor)
	count(deny) > 0 with input as combined(bad_monitor)
}

test_network_on_sets_only if {
	count(network_violations) > 0 with input as combined(bad_deployment)
	count(network_violations) > 0 with input as listed(bad_deployment)
	count(network_violations) == 0 with input as single(bad_deployment)
}

test_combine_multi_document_file if {
	msgs := security_violations with input as [{"path": "all.yaml", "contents": [unlabelled, bad_deployment]}]
	msgs["container <vllm> in Deployment <bad> is privileged"]
	labels_violations["ConfigMap <c> has no label app.kubernetes.io/name"] with input as [
		{"path": "a.yaml", "contents": bad_deployment},
		{"path": "b.yaml", "contents": unlabelled},
	]
}

test_good_single_documents_pass_cross_object_checks if {
	# One document at a time, a Deployment is not blamed for the NetworkPolicy or PDB it lives beside.
	count(network_violations) == 0 with input as single(bad_deployment)
	count(availability_violations) == 0 with input as single(bad_deployment) with data.params as {"min_replicas": 3, "require_pdb": true, "env": "prod"}
	count(alerts_violations) == 0 with input as single(unlabelled) with data.params as {"env": "prod"}
}
