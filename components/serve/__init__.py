"""The Keel predictor: a registered bundle behind KServe's V1/V2 protocols (`python -m keel.components.serve`).

model.py (KeelModel, the kserve.Model), inputs.py (request decoding and schema
checks), transform.py (the fitted features compiled to numpy), explain.py
(shap attributions per raw column), auth.py and http.py (the ASGI front door),
server.py (settings, bundle URIs, sockets and workers).
"""
