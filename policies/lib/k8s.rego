# Shared predicates over rendered manifests; input is a List: {"kind": "List", "items": [...]}.
package lib.k8s

pod_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# The human name policies put in messages: `Deployment <llm-service>`.
name(obj) := sprintf("%s <%s>", [obj.kind, obj.metadata.name])

pod_spec(obj) := obj.spec.template.spec if obj.kind in pod_kinds

pod_spec(obj) := obj.spec if obj.kind == "Pod"

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

# Every object that runs pods.
workloads contains obj if {
	some obj in input.items
	pod_spec(obj)
}

# App and init containers of a workload.
containers(obj) := array.concat(
	object.get(pod_spec(obj), "containers", []),
	object.get(pod_spec(obj), "initContainers", []),
)

# The labels the workload's pods carry.
pod_labels(obj) := object.get(obj, ["spec", "template", "metadata", "labels"], {})

# True when every matchLabels pair of selector is among labels.
selects(selector, labels) if {
	every k, v in object.get(selector, "matchLabels", {}) {
		labels[k] == v
	}
}

objects_of_kind(kind) := [obj | some obj in input.items; obj.kind == kind]
