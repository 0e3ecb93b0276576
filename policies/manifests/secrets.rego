# Secrets: no secret values in the manifests (they live in git). Secret objects with data are
# refused, and secret-looking env vars must come from a secretKeyRef, not a literal value.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on secrets_violations so policies stay independent.
deny contains msg if some msg in secrets_violations

secrets_violations contains msg if {
	some obj in k8s.objects_of_kind("Secret")
	some field in ["data", "stringData"]
	count(object.get(obj, field, {})) > 0
	msg := sprintf("%s carries inline %s; deliver it with an ExternalSecret or an existing Secret", [k8s.name(obj), field])
}

secrets_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	some env in object.get(c, "env", [])
	regex.match(params.value("secret_env_pattern"), env.name)
	object.get(env, "value", null) != null
	msg := sprintf("container <%s> in %s sets secret-looking env %s to a literal value; use valueFrom.secretKeyRef", [c.name, k8s.name(obj), env.name])
}
