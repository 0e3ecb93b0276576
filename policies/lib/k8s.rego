# Shared predicates over rendered manifests. The input may come in any of the shapes conftest,
# OPA and the pipeline use (see `objects`); policies read documents only through `objects`.
package lib.k8s

# Rollout: an Argo Rollouts Rollout (argoproj.io/v1alpha1) carries a Deployment's spec.template.
pod_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout"}

# Replicated long-running workloads: the Deployment, or the Rollout that replaces it (rollout.enabled).
replicated_kinds := {"Deployment", "Rollout"}

# The human name policies put in messages: `Deployment <llm-service>`.
name(obj) := sprintf("%s <%s>", [obj.kind, obj.metadata.name])

pod_spec(obj) := obj.spec.template.spec if obj.kind in pod_kinds

pod_spec(obj) := obj.spec if obj.kind == "Pod"

pod_spec(obj) := obj.spec.jobTemplate.spec.template.spec if obj.kind == "CronJob"

# A document collection: kubectl's List ({"kind": "List", "items": [...]}, what the pipeline
# passes), or bare {"items": [...]}.
is_list(doc) if {
	is_object(doc)
	is_array(doc.items)
	endswith(object.get(doc, "kind", "List"), "List")
}

# The documents of one conftest `--combine` entry's contents (a document, a List, or the
# documents of a multi-document YAML file).
documents(doc) := doc.items if is_list(doc)

documents(doc) := [doc] if {
	is_object(doc)
	not is_list(doc)
}

documents(doc) := [d | some d in doc; is_object(d)] if is_array(doc)

# Every document under evaluation, whatever the input shape:
#   {"kind": "List", "items": [...]}        pipeline render stage (policy.evaluate)
#   one manifest                           `conftest test FILE` (one document at a time)
#   [{"path": "...", "contents": ...}]     `conftest test --combine FILES`
objects contains obj if {
	not is_array(input)
	some obj in documents(input)
	obj.kind
}

objects contains obj if {
	is_array(input)
	some entry in input
	some obj in documents(object.get(entry, "contents", entry))
	obj.kind
}

# True when the input holds a whole release (List or --combine), not one document: checks that
# need several objects at once (a NetworkPolicy for each workload, a PDB, the rollback alert
# being rendered at all) only run then, so one-document-at-a-time runs never deny a good object.
whole_set if is_array(input)

whole_set if is_list(input)

# Every object that runs pods.
workloads contains obj if {
	some obj in objects
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

objects_of_kind(kind) := [obj | some obj in objects; obj.kind == kind]
