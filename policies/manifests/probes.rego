# Probes: every long-running container has readiness and liveness probes; containers that load
# a model first also have a startupProbe, so liveness does not kill them mid-load.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on probes_violations so policies stay independent.
deny contains msg if some msg in probes_violations

long_running := {"Deployment", "StatefulSet", "DaemonSet", "Rollout"}

probes_violations contains msg if {
	some obj in k8s.workloads
	obj.kind in long_running
	some c in k8s.pod_spec(obj).containers
	some probe in ["readinessProbe", "livenessProbe"]
	not c[probe]
	msg := sprintf("container <%s> in %s has no %s", [c.name, k8s.name(obj), probe])
}

probes_violations contains msg if {
	some obj in k8s.workloads
	obj.kind in long_running
	some c in k8s.pod_spec(obj).containers
	c.name in params.value("slow_start_containers")
	not c.startupProbe
	msg := sprintf("container <%s> in %s loads a model but has no startupProbe", [c.name, k8s.name(obj)])
}
