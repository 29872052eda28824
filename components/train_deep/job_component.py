"""KFP component: submit_pytorchjob."""

from keel.components._common.component import keel_component


@keel_component
def submit_pytorchjob(spec_uri: str, training: dict, resources: dict, job_name: str, namespace: str) -> str:
    """Trains on a cluster as a Kubeflow PyTorchJob (1 Master + processes - 1 Workers) and waits for it.

    Every replica runs `python3 -m keel.components.train_deep.worker --spec <spec_uri>`
    in the keel-torch image, with the S3 credentials Secret as its environment,
    and writes the trained model where the spec says. The step itself only
    creates the job and follows its status, so it runs in the base image on no GPU.
    A retried step follows the job it already created instead of training twice.

    Args:
        spec_uri: s3:// URI of the training spec JSON the replicas read.
        training: processes, backoff_limit, timeout_s, poll_s, s3_secret.
        resources: per replica: cpu, memory, shm, accelerator, count, node_selector, tolerations.
        job_name: the job name's prefix (a DNS-1035 label, e.g. the model name); the spec hash is appended.
        namespace: where the job runs (the pipeline's Kubeflow profile namespace).

    Returns:
        The job's final state, "Succeeded" (a failure, a refusal or a timeout fails the step with one line).
    """
    from keel.components._common.errors import user_errors
    from keel.components.train_deep.pytorchjob import run_pytorchjob

    with user_errors("submit_pytorchjob"):  # a failed job, a refusal or a timeout: one line, exit 2
        job, result = run_pytorchjob(spec_uri, job_name, namespace, training, resources,
                                     on_change=lambda line: print(f"submit_pytorchjob: {line}", flush=True))
        workers = job["spec"]["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
        print(f"submit_pytorchjob: PyTorchJob {result.namespace}/{result.name} {result.state} "
              f"(1 master + {workers} workers{', adopted' if result.adopted else ''})", flush=True)
        return result.state
