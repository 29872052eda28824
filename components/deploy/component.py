"""KFP component: deploy_model."""

from kfp.dsl import Artifact, Input, Model, Output

from keel.components._common.component import keel_component


@keel_component
def deploy_model(bundle: Input[Model], deploy: dict, manifest: Output[Artifact]) -> str:
    """Renders a KServe InferenceService for the registered bundle and applies it when enabled and approved.

    The manifest is always written (YAML, `kubectl apply -f`-ready); it is applied
    with the Kubernetes client only when deploy.enabled is true, a cluster is
    configured and the version is approved (or already in production). A version
    that is not is "held": the reason gives the `keel approve` and `keel deploy`
    commands that release it. An approved version applied becomes the production
    one, and the previous production version is archived (the registry's stage log).
    The ServingRuntime, auth and network policies come from manifests/
    (`kubectl apply -k manifests/overlays/<env>`).

    Args:
        bundle: register_model's bundle (its metadata names the registry URI and hash).
        deploy: the `deploy` config section.
        manifest: the InferenceService YAML.

    Returns:
        "created", "updated", "rendered" or "held".
    """
    import yaml

    from keel.components._common import lineage, storage
    from keel.components._common.config import DeploySection
    from keel.components._common.errors import user_errors
    from keel.components.deploy.inference_service import deploy_model as run

    with user_errors("deploy_model"):  # a refused apply or a local registry: one line, exit 2
        section = DeploySection.parse(deploy, "deploy")
        result = run(dict(bundle.metadata), section)
        text = yaml.safe_dump(result.manifest, sort_keys=False)
        storage.write_bytes(manifest.path, text.encode())
        manifest.metadata.update({
            "name": result.manifest["metadata"]["name"],
            "namespace": result.manifest["metadata"]["namespace"],
            "storage_uri": result.manifest["spec"]["predictor"]["model"]["storageUri"],
            "applied": result.applied,
            "action": result.action,
            "reason": result.reason,
            "stage": result.stage,
        })
        manifest.metadata.update(lineage.stamp(
            content_hash=lineage.file_sha256(manifest.path),
            parents=[lineage.parent("bundle", bundle)],
            params={"deploy": section.model_dump(mode="json")},
        ))
        print(f"deploy: InferenceService {result.manifest['metadata']['namespace']}/{result.manifest['metadata']['name']} "
              f"{result.action} ({result.reason})")
        return result.action
