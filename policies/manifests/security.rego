# Pod and container hardening: non-root, no privilege, no escalation, drop ALL capabilities,
# seccomp RuntimeDefault, read-only root filesystem, no host namespaces or hostPath, no SA token.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on security_violations so policies stay independent.
deny contains msg if some msg in security_violations

sc(c) := object.get(c, "securityContext", {})

pod_sc(obj) := object.get(k8s.pod_spec(obj), "securityContext", {})

security_violations contains msg if {
	some obj in k8s.workloads
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	k8s.pod_spec(obj)[field] == true
	msg := sprintf("%s sets %s: true", [k8s.name(obj), field])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some v in object.get(k8s.pod_spec(obj), "volumes", [])
	v.hostPath
	msg := sprintf("%s mounts hostPath volume <%s>", [k8s.name(obj), v.name])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	sc(c).privileged == true
	msg := sprintf("container <%s> in %s is privileged", [c.name, k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	object.get(sc(c), "allowPrivilegeEscalation", true) != false
	msg := sprintf("container <%s> in %s does not set allowPrivilegeEscalation: false", [c.name, k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not object.get(sc(c), "runAsNonRoot", object.get(pod_sc(obj), "runAsNonRoot", false))
	msg := sprintf("container <%s> in %s may run as root (runAsNonRoot is not true)", [c.name, k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not "ALL" in object.get(sc(c), ["capabilities", "drop"], [])
	msg := sprintf("container <%s> in %s does not drop ALL capabilities", [c.name, k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	some cap in object.get(sc(c), ["capabilities", "add"], [])
	msg := sprintf("container <%s> in %s adds capability %s", [c.name, k8s.name(obj), cap])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	profile := object.get(sc(c), ["seccompProfile", "type"], object.get(pod_sc(obj), ["seccompProfile", "type"], "unset"))
	not profile in {"RuntimeDefault", "Localhost"}
	msg := sprintf("container <%s> in %s has seccomp profile %s, want RuntimeDefault or Localhost", [c.name, k8s.name(obj), profile])
}

security_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	not c.name in params.value("writable_root_containers")
	object.get(sc(c), "readOnlyRootFilesystem", false) != true
	msg := sprintf("container <%s> in %s has a writable root filesystem", [c.name, k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.workloads
	object.get(k8s.pod_spec(obj), "automountServiceAccountToken", true) != false
	msg := sprintf("%s mounts a ServiceAccount token (set automountServiceAccountToken: false)", [k8s.name(obj)])
}

security_violations contains msg if {
	some obj in k8s.objects_of_kind("ServiceAccount")
	object.get(obj, "automountServiceAccountToken", true) != false
	msg := sprintf("%s does not set automountServiceAccountToken: false", [k8s.name(obj)])
}
