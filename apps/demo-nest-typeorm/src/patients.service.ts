import { randomUUID } from "node:crypto";
import { InvalidCiphertextError } from "@kms/core";
import { encryptedWhere } from "@kms/typeorm";
import { Inject, Injectable } from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import { QueryFailedError, type Repository } from "typeorm";
import { Patient, type PatientIdentity, type Vitals } from "./patient.entity.ts";
import { conflict, notFound } from "./problems.ts";
import { TenantKeys } from "./tenant-keys.service.ts";

export interface NewPatient {
  readonly ssn: string;
  readonly name: string;
  readonly note: string | null;
  readonly vitals: Vitals | null;
}

/**
 * What the API returns: the decrypted values, never the stored form. The patient's `id` is its
 * random `recordId`: the autoincrement `id` column counts every clinic's patients, so a clinic
 * comparing two of its own patients' ids would learn how many the others created in between.
 */
export interface PatientView {
  readonly id: string;
  readonly tenantId: string;
  readonly ssn: string;
  readonly name: string;
  readonly note: string | null;
  readonly vitals: Vitals | null;
  readonly createdAt: string;
}

export function viewOf(p: Patient): PatientView {
  return {
    id: p.recordId,
    tenantId: p.tenantId,
    ssn: p.ssn,
    name: p.name,
    note: p.note,
    vitals: p.vitals,
    createdAt: p.createdAt.toISOString(),
  };
}

/**
 * The row as loaded, if its lookup values are its own. `ssn` and `name` are bound to the clinic
 * only (lookups need that), so a database writer can move them between patients of one clinic
 * and they still decrypt; `identity`, bound to the row, would not follow. Answered like any
 * other tampered value: InvalidCiphertextException, generic.
 * @throws InvalidCiphertextException when `ssn` or `name` differs from the row's `identity`.
 */
function untampered(patient: Patient): Patient {
  const identity = patient.identity as Partial<PatientIdentity> | null;
  if (identity?.ssn !== patient.ssn || identity?.name !== patient.name) {
    throw new InvalidCiphertextError("a stored value does not belong to its row");
  }
  return patient;
}

function isUniqueViolation(error: unknown): boolean {
  if (!(error instanceof QueryFailedError)) return false;
  const driver = error.driverError as { code?: unknown };
  return driver.code === "SQLITE_CONSTRAINT_UNIQUE" || driver.code === "23505";
}

/**
 * Patient records of the clinic in the current request's KMS context. Nothing here passes the
 * tenant to the encryption layer: @kms/typeorm reads it from the scope KmsContextInterceptor
 * opened, encrypts under the clinic's KMS key and binds every value to the clinic.
 */
@Injectable()
export class PatientsService {
  readonly #patients: Repository<Patient>;
  readonly #keys: TenantKeys;

  constructor(
    @InjectRepository(Patient) patients: Repository<Patient>,
    @Inject(TenantKeys) keys: TenantKeys,
  ) {
    this.#patients = patients;
    this.#keys = keys;
  }

  async create(tenantId: string, input: NewPatient): Promise<Patient> {
    await this.#keys.ensure(tenantId);
    try {
      return await this.#patients.save(
        this.#patients.create({
          tenantId,
          recordId: randomUUID(),
          identity: { ssn: input.ssn, name: input.name },
          ...input,
        }),
      );
    } catch (error) {
      // Deterministic encryption makes the unique constraint on ssn work per clinic.
      if (isUniqueViolation(error)) throw conflict("a patient with this ssn already exists");
      throw error;
    }
  }

  /** The clinic's patients, optionally by exact SSN (deterministic) or name (blind index). */
  async find(tenantId: string, filter: { ssn?: string; name?: string }): Promise<Patient[]> {
    await this.#keys.ensure(tenantId);
    const where = await encryptedWhere(this.#patients, { tenantId, ...filter });
    return (await this.#patients.find({ where, order: { id: "ASC" } })).map(untampered);
  }

  /**
   * One patient by its public id (its recordId). Deliberately NOT filtered by tenant: this
   * route stands for the query that forgot its `WHERE tenant_id = ?`. Another clinic's row comes
   * back from the database, and decrypting it in this request's context fails
   * (InvalidCiphertextException → 403).
   */
  async byId(recordId: string): Promise<Patient> {
    const patient = await this.#patients.findOneBy({ recordId });
    if (patient === null) throw notFound("no such patient");
    return untampered(patient);
  }
}
