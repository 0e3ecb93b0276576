# Resources: every container requests and limits CPU and memory; GPU containers request and
# limit GPUs equally (the scheduler counts requests, the device plugin enforces limits).
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on resources_violations so policies stay independent.
deny contains msg if some msg in resources_violations

resources_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	some r in params.value("required_requests")
	object.get(c, ["resources", "requests", r], null) == null
	msg := sprintf("container <%s> in %s has no resources.requests.%s", [c.name, k8s.name(obj), r])
}

resources_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	some r in params.value("required_limits")
	object.get(c, ["resources", "limits", r], null) == null
	msg := sprintf("container <%s> in %s has no resources.limits.%s", [c.name, k8s.name(obj), r])
}

resources_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	c.name in params.value("gpu_containers")
	gpu := params.value("gpu_resource")
	object.get(c, ["resources", "limits", gpu], null) == null
	msg := sprintf("container <%s> in %s has no resources.limits.%s", [c.name, k8s.name(obj), gpu])
}

resources_violations contains msg if {
	some obj in k8s.workloads
	some c in k8s.containers(obj)
	c.name in params.value("gpu_containers")
	gpu := params.value("gpu_resource")
	limit := object.get(c, ["resources", "limits", gpu], null)
	request := object.get(c, ["resources", "requests", gpu], limit)
	format_int(to_number(request), 10) != format_int(to_number(limit), 10)
	msg := sprintf("container <%s> in %s requests %v %s but limits %v", [c.name, k8s.name(obj), request, gpu, limit])
}
