"""The bundled YAML configs, installed as the package ``splatgen.configs`` (see ``splatgen.resources``)."""
