package main

argo_params := {
	"pinned_envs": ["prod"],
	"pinned_revision_pattern": "^([0-9a-f]{40}|v[0-9]+\\.[0-9]+\\.[0-9]+)$",
	"forbidden_projects": ["default"],
	"chart_repos": ["registry.example.com/llm/charts"],
	"chart_version_pattern": "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?$",
}

oci_chart(version) := {"repoURL": "registry.example.com/llm/charts", "chart": "llm-service", "targetRevision": version}

values_ref(revision) := {"repoURL": "https://git.example.com/x.git", "targetRevision": revision, "ref": "values"}

app_with_sources(env, project, sources) := {
	"kind": "Application",
	"metadata": {"name": sprintf("llm-service-%s", [env]), "labels": {"llm.example.com/environment": env}},
	"spec": {
		"project": project,
		"sources": sources,
		"syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
	},
}

# What the ApplicationSet generates: the OCI chart at a pinned version + the `$values` git ref.
argo_app(env, project, revision) := app_with_sources(env, project, [oci_chart("0.1.0-g1a2b3c4"), values_ref(revision)])

sha := "0123456789abcdef0123456789abcdef01234567"

test_pinned_prod_passes if {
	count(argocd_violations) == 0 with input as {"items": [argo_app("prod", "llm-service", sha), argo_app("dev", "llm-service", "main")]}
		with data.params as argo_params
}

test_unpinned_prod_denied if {
	argocd_violations["Application <llm-service-prod> (env prod) tracks targetRevision main; pin a commit or release tag"] with input as {"items": [argo_app("prod", "llm-service", "main")]}
		with data.params as argo_params
}

test_default_project_denied if {
	argocd_violations["Application <llm-service-dev> uses project default"] with input as {"items": [argo_app("dev", "default", "main")]}
		with data.params as argo_params
}

test_manual_sync_denied if {
	a := object.union(argo_app("dev", "llm-service", "main"), {"spec": {"syncPolicy": {"automated": {"prune": false, "selfHeal": true}}}})
	argocd_violations["Application <llm-service-dev> does not enable syncPolicy.automated.prune"] with input as {"items": [a]}
		with data.params as argo_params
}

test_open_project_denied if {
	proj := {"kind": "AppProject", "metadata": {"name": "p"}, "spec": {"sourceRepos": ["*"], "destinations": [{"server": "s", "namespace": "*"}]}}
	denials := argocd_violations with input as {"items": [proj]} with data.params as argo_params
	denials["AppProject <p> allows every source repository"]
	denials["AppProject <p> allows every namespace as a destination"]
}

test_chart_version_ranges_denied if {
	every rev in ["~0.1.0", "^0.1", "*", "0.1.x", ">=0.1.0", "0.1", "0.1.0+g1a2b3c4", ""] {
		app := app_with_sources("dev", "llm-service", [oci_chart(rev), values_ref("main")])
		msg := sprintf("Application <llm-service-dev> (env dev) chart llm-service targetRevision %q is not an exact SemVer version (no ranges, no *, no +)", [rev])
		argocd_violations[msg] with input as {"items": [app]} with data.params as argo_params
	}
}

test_release_and_per_commit_chart_versions_pass if {
	every rev in ["0.1.0", "1.20.3", "0.1.0-g1a2b3c4", "0.1.0-g1a2b3c4.dirty-0f61bbe6", "2.0.0-rc.1"] {
		app := app_with_sources("prod", "llm-service", [oci_chart(rev), values_ref(sha)])
		count(argocd_violations) == 0 with input as {"items": [app]} with data.params as argo_params
	}
}

test_chart_from_git_path_denied if {
	git_chart := {"repoURL": "https://git.example.com/x.git", "targetRevision": sha, "path": "charts/llm-service"}
	app := app_with_sources("prod", "llm-service", [git_chart, values_ref(sha)])
	denials := argocd_violations with input as {"items": [app]} with data.params as argo_params
	denials["Application <llm-service-prod> (env prod) has no OCI chart source; deploy chart from one of [\"registry.example.com/llm/charts\"]"]
	denials["Application <llm-service-prod> (env prod) renders git path charts/llm-service; env apps deploy the pinned OCI chart and read git only through a `ref` source"]
}

test_chart_from_other_repo_or_with_scheme_denied if {
	every repo in ["oci://registry.example.com/llm/charts", "registry.example.org/charts"] {
		chart := object.union(oci_chart("0.1.0"), {"repoURL": repo})
		app := app_with_sources("dev", "llm-service", [chart, values_ref("main")])
		msg := sprintf("Application <llm-service-dev> (env dev) takes chart llm-service from %s; allowed chart repositories (no scheme): [\"registry.example.com/llm/charts\"]", [repo])
		argocd_violations[msg] with input as {"items": [app]} with data.params as argo_params
	}
}

test_prod_values_ref_must_be_pinned_even_with_a_pinned_chart if {
	app := app_with_sources("prod", "llm-service", [oci_chart("0.1.0"), values_ref("main")])
	argocd_violations["Application <llm-service-prod> (env prod) tracks targetRevision main; pin a commit or release tag"] with input as {"items": [app]}
		with data.params as argo_params
}

appset(generators, ignore) := {
	"apiVersion": "argoproj.io/v1alpha1",
	"kind": "ApplicationSet",
	"metadata": {"name": "llm-service", "namespace": "argocd"},
	"spec": object.union(
		{"generators": generators, "template": {"spec": {"project": "llm-service", "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}}},
		ignore,
	),
}

ignore_sync := {"ignoreApplicationDifferences": [{"jsonPointers": ["/spec/syncPolicy"]}]}

prod_gen(rev, pin) := {"git": {"repoURL": "r", "revision": rev, "files": [{"path": "environments/prod/release.yaml"}], "values": {"prodRevision": pin}}}

branch_gen(files) := {"git": {"repoURL": "r", "revision": "main", "files": files, "values": {"branch": "main"}}}

others := [{"path": "environments/*/release.yaml"}, {"path": "environments/prod/release.yaml", "exclude": true}]

test_appset_pinned_chart_and_values_pass if {
	count(argocd_violations) == 0 with input as {"items": [appset([prod_gen(sha, sha), branch_gen(others)], ignore_sync)]}
		with data.params as argo_params
}

test_appset_reenabling_auto_sync_denied if {
	argocd_violations["ApplicationSet <llm-service> re-applies .spec.syncPolicy to its Applications; add ignoreApplicationDifferences jsonPointers [/spec/syncPolicy] so auto-sync an on-call turned off stays off"] with input as {"items": [appset([prod_gen(sha, sha), branch_gen(others)], {})]}
		with data.params as argo_params
}

test_prod_chart_version_read_on_the_branch_denied if {
	# The seed's layout: one generator reads every release.yaml, prod's included, on main.
	argocd_violations["ApplicationSet <llm-service> reads environments/prod/release.yaml (its chart version) at revision main; read it at the pinned commit"] with input as {"items": [appset([branch_gen([{"path": "environments/*/release.yaml"}])], ignore_sync)]}
		with data.params as argo_params
}

test_prod_chart_and_values_pins_apart_denied if {
	other := "fedcba9876543210fedcba9876543210fedcba98"
	msgs := argocd_violations with input as {"items": [appset([prod_gen(other, sha), branch_gen(others)], ignore_sync)]}
		with data.params as argo_params
	msgs[sprintf("ApplicationSet <llm-service> pins prod's values at %s but reads its chart version at %s; both must be the same commit", [sha, other])]
}

fresh_gen := branch_gen(others)

test_fresh_repo_appset_without_a_prod_generator_passes if {
	# As committed for a fresh GitOps repo: no prod generator until prod's first promotion.
	count(argocd_violations) == 0 with input as {"items": [appset([fresh_gen], ignore_sync)]}
		with data.params as argo_params
}

test_placeholder_prod_generator_denied if {
	zeros := "0000000000000000000000000000000000000000"
	msgs := argocd_violations with input as {"items": [appset([prod_gen(zeros, zeros), fresh_gen], ignore_sync)]}
		with data.params as argo_params
	msgs[sprintf("ApplicationSet <llm-service> generator 0 reads git at the placeholder commit %s: that generator fails and Argo CD then generates no Application at all (argo-cd#19586); leave a pinned env's generator out until its first promotion adds it", [zeros])]
	count(msgs) == 1
}

test_placeholder_in_values_only_denied if {
	zeros := "0000000000000000000000000000000000000000"
	msgs := argocd_violations with input as {"items": [appset([fresh_gen, prod_gen(sha, zeros)], ignore_sync)]}
		with data.params as argo_params
	msgs[sprintf("ApplicationSet <llm-service> generator 1 reads git at the placeholder commit %s: that generator fails and Argo CD then generates no Application at all (argo-cd#19586); leave a pinned env's generator out until its first promotion adds it", [zeros])]
}

test_prod_generator_appended_after_the_branch_generator_passes if {
	# What prod's first promotion writes: the branch generator, then prod's, pinned at one commit.
	count(argocd_violations) == 0 with input as {"items": [appset([fresh_gen, prod_gen(sha, sha)], ignore_sync)]}
		with data.params as argo_params
}

test_prod_generator_without_its_pin_value_denied if {
	gen := {"git": {"repoURL": "r", "revision": sha, "files": [{"path": "environments/prod/release.yaml"}]}}
	argocd_violations["ApplicationSet <llm-service> reads environments/prod/release.yaml but its generator has no values.prodRevision (the prod pin the template reads)"] with input as {"items": [appset([fresh_gen, gen], ignore_sync)]}
		with data.params as argo_params
}
