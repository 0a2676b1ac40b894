"""What a sync request and a synced contact look like; a provider's record is checked here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

RECORD_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # the shape only: the destination does not send mail


class SyncRequest(BaseModel):
    """The payload of a sync job: which provider to read."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")


class Contact(BaseModel):
    """A provider's record as the destination stores it."""

    external_id: str
    provider: str
    record_id: str = Field(pattern=RECORD_ID)
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=EMAIL, max_length=254)
    version: int = Field(ge=0)

    @field_validator("email", mode="after")
    @classmethod
    def _lower_case(cls, email: str) -> str:
        return email.lower()


def to_contact(provider: str, record: dict) -> Contact:
    """The destination's form of a provider record; pydantic.ValidationError names what is wrong."""
    fields = record if isinstance(record, dict) else {}
    return Contact(
        external_id=f"{provider}:{fields.get('id')}",
        provider=provider,
        record_id=fields.get("id"),
        name=fields.get("name"),
        email=fields.get("email"),
        version=fields.get("version"),
    )
