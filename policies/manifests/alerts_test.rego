package main

alert_params := {
	"env": "prod",
	"alert_annotations": ["summary", "description", "runbook_url"],
	"alert_severities": ["warning", "critical"],
	"rollback_alerts": ["LLMErrorBudgetBurnFast"],
	"rollback_envs_required": ["prod"],
}

rules(rs) := {"items": [{"kind": "PrometheusRule", "metadata": {"name": "llm"}, "spec": {"groups": [{"name": "g", "rules": rs}]}}]}

annotations := {"summary": "s", "description": "d", "runbook_url": "https://example.com/r.md"}

error_alert := {"alert": "LLMErrorBudgetBurnFast", "expr": "x > 1", "labels": {"severity": "critical", "rollback": "true", "env": "prod"}, "annotations": annotations}

test_complete_alerts_pass if {
	count(alerts_violations) == 0 with input as rules([error_alert, {"record": "r", "expr": "x"}]) with data.params as alert_params
}

test_missing_runbook_denied if {
	alerts_violations["alert <LLMErrorBudgetBurnFast> in PrometheusRule <llm> has no runbook_url annotation"] with input as rules([object.union(object.remove(error_alert, ["annotations"]), {"annotations": object.remove(annotations, ["runbook_url"])})])
		with data.params as alert_params
}

test_bad_severity_denied if {
	some msg in alerts_violations with input as rules([object.union(object.remove(error_alert, ["labels"]), {"labels": {"severity": "page", "rollback": "true", "env": "prod"}})])
		with data.params as alert_params
	contains(msg, "has severity page")
}

test_rollback_labels_required if {
	denials := alerts_violations with input as rules([object.union(object.remove(error_alert, ["labels"]), {"labels": {"severity": "critical"}})]) with data.params as alert_params
	denials["alert <LLMErrorBudgetBurnFast> in PrometheusRule <llm> drives rollback but lacks label rollback: \"true\""]
	denials["alert <LLMErrorBudgetBurnFast> in PrometheusRule <llm> has env label unset, want prod"]
}

test_missing_rollback_alert_denied if {
	alerts_violations["alert <LLMErrorBudgetBurnFast> (automatic rollback) is not rendered in prod"] with input as rules([]) with data.params as alert_params
}

test_symptom_alert_with_rollback_label_denied if {
	symptom := {"alert": "LLMHighErrorRate", "expr": "x > 1", "labels": {"severity": "critical", "rollback": "true", "env": "prod"}, "annotations": annotations}
	alerts_violations["alert <LLMHighErrorRate> in PrometheusRule <llm> carries rollback: \"true\" but is not one of the rollback alerts [\"LLMErrorBudgetBurnFast\"]"] with input as rules([error_alert, symptom])
		with data.params as alert_params
}

test_symptom_alert_without_rollback_label_passes if {
	symptom := {"alert": "LLMHighErrorRate", "expr": "x > 1", "labels": {"severity": "critical", "env": "prod"}, "annotations": annotations}
	count(alerts_violations) == 0 with input as rules([error_alert, symptom]) with data.params as alert_params
}
