from django import template

from generator import status
from generator.models import GenerationRequest

register = template.Library()


@register.filter
def model_name(model_id: str) -> str:
    """A model id as people know it ("Nano Banana Pro"); "" stays ""."""
    return GenerationRequest.model_name(model_id) if model_id else ""


@register.filter
def status_view(request: GenerationRequest):
    """The request's status view (generator/status.py): `{% with s=r|status_view %}`;
    the one the view computed for the whole page (status_views()) when it did."""
    return getattr(request, "status_now", None) or status.status_view(request)
