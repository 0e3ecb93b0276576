# Images: a fixed tag or a digest, never `latest` or untagged; digests only where required;
# only from allowed registries.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on images_violations so policies stay independent.
deny contains msg if some msg in images_violations

# The part after the last "/" (so a registry port is not mistaken for a tag).
image_ref(image) := parts[count(parts) - 1] if parts := split(image, "/")

images_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	endswith(image_ref(c.image), ":latest")
	msg := sprintf("container <%s> in %s uses the latest tag (%s); pin a version or digest", [c.name, k8s.name(obj), c.image])
}

images_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not contains(image_ref(c.image), ":")
	not contains(c.image, "@")
	msg := sprintf("container <%s> in %s has an untagged image (%s)", [c.name, k8s.name(obj), c.image])
}

images_violations contains msg if {
	params.value("require_digests")
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not regex.match(`@sha256:[0-9a-f]{64}$`, c.image)
	msg := sprintf("container <%s> in %s is not pinned by digest (%s); %s requires digests", [c.name, k8s.name(obj), c.image, params.env])
}

images_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not allowed_registry(c.image)
	msg := sprintf("container <%s> in %s uses image %s outside the allowed registries %v", [c.name, k8s.name(obj), c.image, params.value("allowed_registries")])
}

allowed_registry(image) if {
	some prefix in params.value("allowed_registries")
	startswith(image, prefix)
}
