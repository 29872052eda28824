"""KFP component: write_model_card."""

from typing import Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from keel.components._common.component import keel_component


@keel_component
def write_model_card(
    raw: Input[Dataset],
    profile_summary: Input[Artifact],
    trained_model: Input[Model],
    metrics: Input[Metrics],
    target: dict,
    model_card: dict,
    registry: dict,
    card_md: Output[Markdown],
    card_html: Output[HTML],
    search: Optional[Input[Dataset]] = None,
    fairness: Optional[Input[Metrics]] = None,
    explainer: Optional[Input[Artifact]] = None,
):
    """Documents the trained model: details, intended use, factors, metrics, data, ethics, caveats, lineage.

    Args:
        raw: the ingested data (source and content hash).
        profile_summary: the profile JSON (class balance, warnings, target correlations).
        trained_model: the trained model (family, parameters, classes, input columns).
        metrics: the evaluation metrics.
        target: the `target` config section.
        model_card: the `model_card` config section (owners, intended_use, limitations, ethical_considerations).
        registry: the `registry` config section (the card names the model as it is registered).
        card_md: the card as Markdown (rendered by the Kubeflow dashboard).
        card_html: the card as a self-contained HTML page.
        search: the tune step's trials, when the parameters came from a search (tuned pipeline).
        fairness: assess_fairness's group metrics and gate (the Fairness section, with plots).
        explainer: explain_model's explainer (the Explainability section: method, global attributions, plot).
    """
    from keel.components._common import lineage
    from keel.components._common.config import ModelCardSection, RegistrySection, TargetSection
    from keel.components._common.errors import user_errors
    from keel.components.model_card.card import write_model_card as write_card

    with user_errors("write_model_card"):
        target_cfg = TargetSection.parse(target, "target")
        card_cfg = ModelCardSection.parse(model_card, "model_card")
        result = write_card(
            raw=raw, profile_summary=profile_summary, trained_model=trained_model, metrics=metrics,
            target=target_cfg, card=card_cfg, md_path=card_md.path, html_path=card_html.path,
            model_name=RegistrySection.parse(registry, "registry").model_name, search=search,
            fairness=fairness, explainer=explainer,
        )
        parents = [{"name": r["name"], "uri": r["uri"], "content_hash": r["content_hash"]} for r in result["lineage"]]
        for artifact, digest in ((card_md, result["md_hash"]), (card_html, result["html_hash"])):
            artifact.metadata["title"] = result["title"]
            artifact.metadata.update(lineage.stamp(content_hash=digest, parents=parents, params=card_cfg.model_dump(mode="json")))
