"""Signals other parts (the rounds engine, the pod channel) listen to. Sent after commit."""

from django.dispatch import Signal

# sender=Consent class; kwargs: consent (Consent)
consent_withdrawn = Signal()
# sender=DataSubject class; kwargs: user, paused (bool)
training_pause_changed = Signal()
