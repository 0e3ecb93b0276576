package main

test_labelled_passes if {
	count(labels_violations) == 0 with input as {"items": [{"kind": "Service", "metadata": {"name": "s", "labels": {"app.kubernetes.io/name": "x"}}}]}
		with data.params as {"required_labels": ["app.kubernetes.io/name"]}
}

test_missing_label_denied if {
	labels_violations["Service <s> has no label app.kubernetes.io/part-of"] with input as {"items": [{"kind": "Service", "metadata": {"name": "s"}}]}
		with data.params as {"required_labels": ["app.kubernetes.io/part-of"]}
}
