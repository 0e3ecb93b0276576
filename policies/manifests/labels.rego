# Labels: every object carries the standard app.kubernetes.io labels (list from data).
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on labels_violations so policies stay independent.
deny contains msg if some msg in labels_violations

labels_violations contains msg if {
	some obj in k8s.objects
	some label in params.value("required_labels")
	not obj.metadata.labels[label]
	msg := sprintf("%s has no label %s", [k8s.name(obj), label])
}
