"""`keel_component`: how every Keel stage becomes a containerized KFP component.

A containerized Python component (`target_image`) runs code that is already in
its image, so no step installs anything when it starts. KFP's own command for
those (`python3 -m kfp.dsl.executor_main`) finds the function through a
`kfp_config.ini` in the container's working directory, and kfp.local's
SubprocessRunner refuses it outright. Keel's steps are all in the installed
`keel` package, so the command is Keel's executor instead: it imports the
step by name (COMPONENTS, in images.py) the same way in an image, on a cluster and
in a local subprocess.
"""

from __future__ import annotations

from kfp import dsl

from keel.components._common.images import COMPONENT_IMAGES, COMPONENT_MODULES

EXECUTOR_COMMAND = ["python3", "-m", "keel.components.executor"]


def keel_component(func):
    """`@dsl.component` with the step's image from its COMPONENTS entry and Keel's executor as its command."""
    name = func.__name__
    if name not in COMPONENT_IMAGES or name not in COMPONENT_MODULES:
        raise LookupError(f"component {name!r} is not declared in keel.components._common.images.COMPONENTS; "
                          "add its module and image there")
    if not hasattr(dsl, "component"):
        # Inside a running step kfp.dsl is only partly loaded (_KFP_RUNTIME):
        # KFP's Executor calls the plain function.
        return func
    image = COMPONENT_IMAGES[name]
    component = dsl.component(base_image=image, target_image=image, install_kfp_package=False)(func)
    component.component_spec.implementation.container.command = list(EXECUTOR_COMMAND)
    return component
