package main

argo_params := {
	"pinned_envs": ["prod"],
	"pinned_revision_pattern": "^([0-9a-f]{40}|v[0-9]+\\.[0-9]+\\.[0-9]+)$",
	"forbidden_projects": ["default"],
}

argo_app(env, project, revision) := {
	"kind": "Application",
	"metadata": {"name": sprintf("llm-service-%s", [env]), "labels": {"llm.example.com/environment": env}},
	"spec": {
		"project": project,
		"sources": [{"repoURL": "https://git.example.com/x.git", "targetRevision": revision, "path": "charts/llm-service"}],
		"syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
	},
}

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
