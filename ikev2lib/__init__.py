"""ikev2lib: IKEv2/IPsec for Python."""

__all__: list[str] = []
__version__ = "0.1.0"
