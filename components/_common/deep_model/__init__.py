"""Image models shared by the deep-learning stages: the architectures (torch and Keras), the trained model's
directory format (artifact) and the runtimes that load each serving export. Train writes them; evaluate,
compress, register and serve read them."""
