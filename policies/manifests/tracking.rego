# Tracking: no selector over objects Argo CD syncs may rely on the label Argo CD's resource
# tracking rewrites. With application.resourceTrackingMethod `label` (the default before Argo CD
# v3.0) or `annotation+label`, Argo CD sets app.kubernetes.io/instance (application.instanceLabelKey)
# on every object it syncs to the Application's name (argo-cd util/argo/resource_tracking.go
# SetAppInstance -> util/kube/kube.go SetAppInstanceLabel; docs/user-guide/resource_tracking.md):
# the chart's Services of Application llm-service-prod carry instance=llm-service-prod, so a
# ServiceMonitor selecting instance=llm-service (the Helm release) selects nothing -> nothing is
# scraped -> the burn-rate alert never fires -> no rollback.
# Pod templates are not rewritten (kube.go copies only the legacy app-name key into them), so
# selectors over pods (Deployment, Service, NetworkPolicy, PDB, PodMonitor) stay valid; they
# also must keep matching the immutable Deployment selector, so they are not checked here.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on tracking_violations so policies stay independent.
deny contains msg if some msg in tracking_violations

# Kinds whose selector matches other synced objects' own metadata labels, and where it is.
tracking_object_selectors := {"ServiceMonitor": ["spec", "selector"]}

tracking_selector_keys(selector) := {k | some k, _ in object.get(selector, "matchLabels", {})} | {e.key |
	some e in object.get(selector, "matchExpressions", [])
}

tracking_violations contains msg if {
	some kind, path in tracking_object_selectors
	some obj in k8s.objects_of_kind(kind)
	some key in tracking_selector_keys(object.get(obj, path, {}))
	key in params.value("tracking_labels")
	msg := sprintf("%s selects on %s, which Argo CD's label tracking overwrites with the Application name on every object it syncs; select on labels the chart owns instead (%v)", [k8s.name(obj), key, params.value("owned_selector_labels")])
}

# A ServiceMonitor of the release must select one of the release's Services, or nothing is scraped.
tracking_violations contains msg if {
	k8s.whole_set
	some obj in k8s.objects_of_kind("ServiceMonitor")
	not tracking_selects_a_service(obj)
	msg := sprintf("%s selects no Service of this release (selector %v): nothing would be scraped", [k8s.name(obj), object.get(obj, ["spec", "selector"], {})])
}

tracking_selects_a_service(sm) if {
	some svc in k8s.objects_of_kind("Service")
	k8s.selects(sm.spec.selector, object.get(svc, ["metadata", "labels"], {}))
	every e in object.get(sm.spec.selector, "matchExpressions", []) {
		tracking_expression_holds(e, object.get(svc, ["metadata", "labels"], {}))
	}
}

tracking_expression_holds(e, labels) if {
	e.operator == "In"
	labels[e.key] in e.values
}

tracking_expression_holds(e, labels) if {
	e.operator == "NotIn"
	not labels[e.key] in e.values
}

tracking_expression_holds(e, labels) if {
	e.operator == "Exists"
	labels[e.key]
}

tracking_expression_holds(e, labels) if {
	e.operator == "DoesNotExist"
	not labels[e.key]
}
