# Argo CD: Applications (and ApplicationSet templates) never use the `default` project; apps of
# envs deploy the chart as an OCI artifact (`chart:` from an allowed chart repository) at an exact
# SemVer version (no ranges, no `*`, no `+`), never a chart from a git path; apps of pinned envs
# (prod) pin every git source (the `$values` ref) to a commit or release tag; generated apps sync
# automatically with prune and self-heal; AppProjects do not allow every repo or destination.
package main

import data.lib.k8s
import data.lib.params

# conftest/OPA entry point; tests assert on argocd_violations so policies stay independent.
deny contains msg if some msg in argocd_violations

app_env(app) := app.metadata.labels[params.label("environment")]

argocd_violations contains msg if {
	some obj in k8s.objects
	obj.kind == "Application"
	obj.spec.project in params.value("forbidden_projects")
	msg := sprintf("%s uses project %s", [k8s.name(obj), obj.spec.project])
}

argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	obj.spec.template.spec.project in params.value("forbidden_projects")
	msg := sprintf("%s generates apps in project %s", [k8s.name(obj), obj.spec.template.spec.project])
}

app_sources(app) := array.concat(object.get(app.spec, "sources", []), [s | s := app.spec.source])

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app) in params.value("pinned_envs")
	some src in app_sources(app)
	not src.chart
	not regex.match(params.value("pinned_revision_pattern"), object.get(src, "targetRevision", "HEAD"))
	msg := sprintf("%s (env %s) tracks targetRevision %s; pin a commit or release tag", [k8s.name(app), app_env(app), object.get(src, "targetRevision", "HEAD")])
}

chart_sources(app) := [src | some src in app_sources(app); src.chart]

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app)
	count(chart_sources(app)) == 0
	msg := sprintf("%s (env %s) has no OCI chart source; deploy chart from one of %v", [k8s.name(app), app_env(app), params.value("chart_repos")])
}

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app)
	some src in chart_sources(app)
	not src.repoURL in params.value("chart_repos")
	msg := sprintf("%s (env %s) takes chart %s from %s; allowed chart repositories (no scheme): %v", [k8s.name(app), app_env(app), src.chart, src.repoURL, params.value("chart_repos")])
}

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app)
	some src in chart_sources(app)
	rev := object.get(src, "targetRevision", "")
	not regex.match(params.value("chart_version_pattern"), rev)
	msg := sprintf("%s (env %s) chart %s targetRevision %q is not an exact SemVer version (no ranges, no *, no +)", [k8s.name(app), app_env(app), src.chart, rev])
}

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app)
	some src in app_sources(app)
	object.get(src, "path", "") != ""
	msg := sprintf("%s (env %s) renders git path %s; env apps deploy the pinned OCI chart and read git only through a `ref` source", [k8s.name(app), app_env(app), src.path])
}

argocd_violations contains msg if {
	some app in k8s.objects_of_kind("Application")
	app_env(app)
	some flag in ["prune", "selfHeal"]
	object.get(app.spec, ["syncPolicy", "automated", flag], false) != true
	msg := sprintf("%s does not enable syncPolicy.automated.%s", [k8s.name(app), flag])
}

argocd_violations contains msg if {
	some proj in k8s.objects_of_kind("AppProject")
	"*" in object.get(proj.spec, "sourceRepos", [])
	msg := sprintf("%s allows every source repository", [k8s.name(proj)])
}

argocd_violations contains msg if {
	some proj in k8s.objects_of_kind("AppProject")
	some d in object.get(proj.spec, "destinations", [])
	object.get(d, "namespace", "*") == "*"
	msg := sprintf("%s allows every namespace as a destination", [k8s.name(proj)])
}

# An on-call may turn auto-sync off on a generated Application; the ApplicationSet must not turn
# it back on: templates that sync automatically ignore differences in /spec/syncPolicy.
argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	object.get(obj.spec, ["template", "spec", "syncPolicy", "automated"], null) != null
	not ignores_sync_policy(obj)
	msg := sprintf("%s re-applies .spec.syncPolicy to its Applications; add ignoreApplicationDifferences jsonPointers [/spec/syncPolicy] so auto-sync an on-call turned off stays off", [k8s.name(obj)])
}

ignores_sync_policy(appset) if {
	some rule in object.get(appset.spec, "ignoreApplicationDifferences", [])
	"/spec/syncPolicy" in object.get(rule, "jsonPointers", [])
}

# A pinned env's release.yaml (its chart version) is read by a git generator at a pinned commit,
# the same one its values are pinned to: chart and values of prod come from one commit.
generator_reads(git, rel) if {
	some f in object.get(git, "files", [])
	not object.get(f, "exclude", false)
	glob.match(f.path, ["/"], rel)
	not generator_excludes(git, rel)
}

generator_excludes(git, rel) if {
	some f in object.get(git, "files", [])
	object.get(f, "exclude", false)
	glob.match(f.path, ["/"], rel)
}

argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	some gen in obj.spec.generators
	some env in params.value("pinned_envs")
	generator_reads(gen.git, sprintf("environments/%s/release.yaml", [env]))
	rev := object.get(gen.git, "revision", "HEAD")
	not regex.match(params.value("pinned_revision_pattern"), rev)
	msg := sprintf("%s reads environments/%s/release.yaml (its chart version) at revision %s; read it at the pinned commit", [k8s.name(obj), env, rev])
}

argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	some gen in obj.spec.generators
	pin := gen.git.values.prodRevision
	object.get(gen.git, "revision", "HEAD") != pin
	msg := sprintf("%s pins prod's values at %s but reads its chart version at %s; both must be the same commit", [k8s.name(obj), pin, object.get(gen.git, "revision", "HEAD")])
}

# A pinned env's generator carries its pin as values.<env>Revision (the template reads it with
# missingkey=error: without it the template fails, and with it every Application, see below).
argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	some gen in obj.spec.generators
	some env in params.value("pinned_envs")
	generator_reads(gen.git, sprintf("environments/%s/release.yaml", [env]))
	key := sprintf("%sRevision", [env])
	object.get(gen.git, ["values", key], null) == null
	msg := sprintf("%s reads environments/%s/release.yaml but its generator has no values.%s (the %s pin the template reads)", [k8s.name(obj), env, key, env])
}

# A generator reading git at a commit that cannot exist (the all-zero placeholder) fails, and one
# failing generator stops every Application of the ApplicationSet (argo-cd#19586;
# applicationset/controllers/template/template.go returns the first generator error): a fresh GitOps
# repository leaves a pinned env's generator out until its first promotion appends it, pinned.
generator_revisions(git) := array.concat([object.get(git, "revision", "HEAD")], [v | some v in object.get(git, "values", {}); is_string(v)])

argocd_violations contains msg if {
	some obj in k8s.objects_of_kind("ApplicationSet")
	some i, gen in obj.spec.generators
	some rev in generator_revisions(gen.git)
	regex.match("^0{40}$", rev)
	msg := sprintf("%s generator %d reads git at the placeholder commit %s: that generator fails and Argo CD then generates no Application at all (argo-cd#19586); leave a pinned env's generator out until its first promotion adds it", [k8s.name(obj), i, rev])
}
