package main

# A Service as Argo CD's label tracking leaves it (instance = the Application's name), with the
# chart's own labels intact.
tracked_service := {"kind": "Service", "metadata": {"name": "llm-service", "labels": {
	"app.kubernetes.io/name": "llm-service",
	"app.kubernetes.io/instance": "llm-service-prod",
	"app.kubernetes.io/component": "gateway",
	"llm.example.com/instance": "llm-service",
}}, "spec": {"selector": {"app.kubernetes.io/name": "llm-service", "app.kubernetes.io/instance": "llm-service"}}}

monitor(selector) := {"kind": "ServiceMonitor", "metadata": {"name": "llm-service-gateway"}, "spec": {"selector": selector}}

owned := {"matchLabels": {"app.kubernetes.io/name": "llm-service", "llm.example.com/instance": "llm-service", "app.kubernetes.io/component": "gateway"}}

test_owned_selector_passes if {
	count(tracking_violations) == 0 with input as {"kind": "List", "items": [tracked_service, monitor(owned)]}
}

test_instance_in_match_labels_denied if {
	sel := {"matchLabels": {"app.kubernetes.io/name": "llm-service", "app.kubernetes.io/instance": "llm-service"}}
	tracking_violations[`ServiceMonitor <llm-service-gateway> selects on app.kubernetes.io/instance, which Argo CD's label tracking overwrites with the Application name on every object it syncs; select on labels the chart owns instead (["app.kubernetes.io/name", "llm.example.com/instance"])`] with input as monitor(sel)
}

test_instance_in_match_expressions_denied if {
	sel := {"matchExpressions": [{"key": "app.kubernetes.io/instance", "operator": "In", "values": ["llm-service"]}]}
	count(tracking_violations) == 1 with input as monitor(sel)
}

test_tracking_label_key_from_data if {
	sel := {"matchLabels": {"argocd.argoproj.io/instance": "x"}}
	count(tracking_violations) == 1 with input as monitor(sel) with data.params as {"tracking_labels": ["argocd.argoproj.io/instance"], "owned_selector_labels": []}
	count(tracking_violations) == 0 with input as monitor(sel) with data.params as {"tracking_labels": ["app.kubernetes.io/instance"], "owned_selector_labels": []}
}

# Pod selectors stay on the (immutable) Deployment selector labels: pod templates are never rewritten.
test_service_selecting_pods_on_instance_passes if {
	count(tracking_violations) == 0 with input as tracked_service
}

test_monitor_selecting_no_service_denied if {
	sel := {"matchLabels": {"app.kubernetes.io/name": "llm-service", "llm.example.com/instance": "llm-service", "app.kubernetes.io/component": "vllm-metrics"}}
	tracking_violations[`ServiceMonitor <llm-service-gateway> selects no Service of this release (selector {"matchLabels": {"app.kubernetes.io/component": "vllm-metrics", "app.kubernetes.io/name": "llm-service", "llm.example.com/instance": "llm-service"}}): nothing would be scraped`] with input as {"kind": "List", "items": [tracked_service, monitor(sel)]}
}

test_match_expressions_decide_the_match if {
	exists := {"matchExpressions": [{"key": "llm.example.com/instance", "operator": "Exists"}]}
	count(tracking_violations) == 0 with input as {"kind": "List", "items": [tracked_service, monitor(exists)]}
	not_in := {"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["gateway"]}]}
	count(tracking_violations) == 1 with input as {"kind": "List", "items": [tracked_service, monitor(not_in)]}
}

test_service_coverage_only_on_whole_sets if {
	count(tracking_violations) == 0 with input as monitor(owned)
}
