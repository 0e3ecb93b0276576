# Alerts: every alerting rule has summary, description and runbook_url annotations and an
# allowed severity; rollback alerts carry rollback: "true" and this env (the rollback
# controller acts on exactly those labels), and no other alert carries rollback: "true".
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on alerts_violations so policies stay independent.
deny contains msg if some msg in alerts_violations

alert_rules contains [obj, rule] if {
	some obj in k8s.objects_of_kind("PrometheusRule")
	some group in obj.spec.groups
	some rule in group.rules
	rule.alert
}

alerts_violations contains msg if {
	some [obj, rule] in alert_rules
	some annotation in params.value("alert_annotations")
	not rule.annotations[annotation]
	msg := sprintf("alert <%s> in %s has no %s annotation", [rule.alert, k8s.name(obj), annotation])
}

alerts_violations contains msg if {
	some [obj, rule] in alert_rules
	severity := object.get(rule, ["labels", "severity"], "unset")
	not severity in params.value("alert_severities")
	msg := sprintf("alert <%s> in %s has severity %s, want one of %v", [rule.alert, k8s.name(obj), severity, params.value("alert_severities")])
}

alerts_violations contains msg if {
	some [obj, rule] in alert_rules
	rule.alert in params.value("rollback_alerts")
	object.get(rule, ["labels", "rollback"], "unset") != "true"
	msg := sprintf("alert <%s> in %s drives rollback but lacks label rollback: \"true\"", [rule.alert, k8s.name(obj)])
}

alerts_violations contains msg if {
	some [obj, rule] in alert_rules
	rule.alert in params.value("rollback_alerts")
	object.get(rule, ["labels", "env"], "unset") != params.env
	msg := sprintf("alert <%s> in %s has env label %s, want %s", [rule.alert, k8s.name(obj), object.get(rule, ["labels", "env"], "unset"), params.env])
}

alerts_violations contains msg if {
	some [obj, rule] in alert_rules
	not rule.alert in params.value("rollback_alerts")
	object.get(rule, ["labels", "rollback"], "unset") == "true"
	msg := sprintf("alert <%s> in %s carries rollback: \"true\" but is not one of the rollback alerts %v", [rule.alert, k8s.name(obj), params.value("rollback_alerts")])
}

alerts_violations contains msg if {
	k8s.whole_set
	some env in params.value("rollback_envs_required")
	env == params.env
	some alert in params.value("rollback_alerts")
	not rendered_alert(alert)
	msg := sprintf("alert <%s> (automatic rollback) is not rendered in %s", [alert, env])
}

rendered_alert(name) if {
	some [_, rule] in alert_rules
	rule.alert == name
}
