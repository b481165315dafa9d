"""Resident rules: validated ID, PII encrypted by the HSM, duplicates refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit import service as audit
from cardsvc.errors import Conflict, NotFound, ValidationFailed
from cardsvc.hsm import HsmClient
from cardsvc.residents import repository
from cardsvc.residents.idnumber import (
    birth_date_of,
    mask_name,
    mask_resident_id,
    parse_resident_id,
)
from cardsvc.residents.models import Resident

PII_KEY = "PII"
PII_INDEX_KEY = "PII_INDEX"


@dataclass(frozen=True)
class ResidentIn:
    resident_id: str
    name: str
    phone: str
    address: str
    sex: str | None = None
    birth_date: date | None = None


@dataclass(frozen=True)
class ResidentPii:
    resident_id: str
    name: str

    @property
    def birth_date(self) -> date:
        return birth_date_of(self.resident_id)


async def id_index(hsm: HsmClient, resident_id: str) -> str:
    return (await hsm.data_index(PII_INDEX_KEY, resident_id.encode("ascii"))).hex()


async def register(
    session: AsyncSession, hsm: HsmClient, data: ResidentIn, *, actor: str, today: date
) -> Resident:
    """``today``: the local date, the latest birth date an ID may hold."""
    info = parse_resident_id(data.resident_id, today=today)
    name = data.name.strip()
    if not name:
        raise ValidationFailed("name is required")
    if data.sex is not None and data.sex != info.sex:
        raise ValidationFailed("sex does not match the resident ID")
    if data.birth_date is not None and data.birth_date != info.birth_date:
        raise ValidationFailed("birth date does not match the resident ID")
    index = await id_index(hsm, info.number)
    if await repository.by_index(session, index) is not None:
        raise Conflict("this resident is already registered")
    resident = await repository.add(
        session,
        Resident(
            id_index=index,
            id_cipher=await hsm.data_encrypt(PII_KEY, info.number.encode("ascii")),
            id_masked=mask_resident_id(info.number),
            name_cipher=await hsm.data_encrypt(PII_KEY, name.encode("utf-8")),
            name_masked=mask_name(name),
            sex=info.sex,
            phone=data.phone,
            address=data.address,
            created_by=actor,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="resident.register",
        entity="resident",
        entity_id=str(resident.id),
        # No personal data in the audit trail: the entry names the record (entity_id).
    )
    return resident


async def get(session: AsyncSession, resident_id: int) -> Resident:
    resident = await repository.get(session, resident_id)
    if resident is None:
        raise NotFound(f"no resident {resident_id}")
    return resident


async def find_by_resident_id(
    session: AsyncSession, hsm: HsmClient, resident_id: str
) -> Resident | None:
    # Any well-formed number may be looked up; one with a future birth date is simply not found.
    info = parse_resident_id(resident_id, today=date.max)
    return await repository.by_index(session, await id_index(hsm, info.number))


async def lookup(session: AsyncSession, hsm: HsmClient, resident_id: str) -> Resident:
    """The resident with this ID number; NotFound (never echoing the ID) when none."""
    resident = await find_by_resident_id(session, hsm, resident_id)
    if resident is None:
        raise NotFound("no resident with this ID")
    return resident


async def reveal(hsm: HsmClient, resident: Resident) -> ResidentPii:
    """The clear ID and name, for the roles and steps that need them (counter, personalization);
    whoever shows them to a person records ``resident.reveal`` in the audit trail."""
    number = (await hsm.data_decrypt(PII_KEY, resident.id_cipher)).decode("ascii")
    name = (await hsm.data_decrypt(PII_KEY, resident.name_cipher)).decode("utf-8")
    return ResidentPii(number, name)


async def update_contact(
    session: AsyncSession, resident: Resident, *, phone: str | None, address: str | None, actor: str
) -> Resident:
    changed = [
        name
        for name, old, new in (
            ("phone", resident.phone, phone),
            ("address", resident.address, address),
        )
        if new is not None and new != old
    ]
    if phone is not None:
        resident.phone = phone
    if address is not None:
        resident.address = address
    await session.flush()
    # Which fields changed, never their values (personal data stays out of the audit trail).
    await audit.record(
        session,
        actor=actor,
        action="resident.update",
        entity="resident",
        entity_id=str(resident.id),
        after={"changed": changed},
    )
    return resident
