"""The product's top: the one configuration, the stage runner's command line, and the entry points that compose the
data stages (`pipelines`) and the trainer (`trainer`). Nothing below imports it."""
