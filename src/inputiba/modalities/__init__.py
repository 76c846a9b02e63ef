"""InputIBA per kind of input: the adapters that tell the stage sequencer where the network is
split, what the GAN generates and what shape the map has; and the user-facing classes
(:class:`~inputiba.modalities.image.InputIBA`, :class:`~inputiba.modalities.text.TextInputIBA`)."""
