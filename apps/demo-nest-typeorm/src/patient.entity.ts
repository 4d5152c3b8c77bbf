import { EncryptedColumn } from "@kms/typeorm";
import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from "typeorm";

/** Every encrypted value is bound to the tenant of the request that wrote it (ambient scope). */
const TENANT_SCOPE = { fromScope: ["tenant"] };
/**
 * Values never looked up are bound to their row as well, so a ciphertext copied to another
 * patient of the same clinic (someone with write access to the database moving a note) fails
 * to decrypt instead of showing up as that patient's. `rowIdentity` binds the recordId into
 * each value only: the data key stays the clinic's (one KMS call per clinic, not per patient,
 * and the KMS sees the clinic alone). The lookup columns (ssn, name) cannot be bound to the row:
 * an equality lookup has no recordId to give; `identity` covers them.
 */
const ROW_SCOPE = { fromScope: ["tenant"], rowIdentity: ["recordId"] };

/** The lookup values of a patient, sealed again under the row's binding. */
export interface PatientIdentity {
  readonly ssn: string;
  readonly name: string;
}

/** Free-form measurements; stored as one encrypted JSON value. */
export type Vitals = Record<string, unknown>;

@Entity("patients")
@Index(["tenantId", "id"])
export class Patient {
  @PrimaryGeneratedColumn()
  id: number;

  /** In the clear: rows are filtered by it. The ciphertexts are bound to it as well. */
  @Column({ type: "varchar", length: 40 })
  tenantId: string;

  /**
   * A random UUID chosen before the insert (the generated `id` is not known yet), to bind the
   * note and vitals to this row.
   */
  @Column({ type: "varchar", length: 36, unique: true })
  recordId: string;

  /**
   * Deterministic (AES-SIV): equal SSNs of one tenant have equal ciphertexts, so `WHERE ssn = ?`
   * and the unique constraint work. Another tenant's equal SSN encrypts differently.
   */
  @EncryptedColumn({ deterministic: true, unique: true, context: TENANT_SCOPE })
  ssn: string;

  /** Randomized, looked up through a keyed blind index of the trimmed, lowercased name. */
  @EncryptedColumn({
    blindIndex: { column: "nameIndex", normalize: ["trim", "lowercase"] },
    context: TENANT_SCOPE,
  })
  name: string;

  @EncryptedColumn({ nullable: true, context: ROW_SCOPE })
  note: string | null;

  @EncryptedColumn({ type: "json", nullable: true, context: ROW_SCOPE })
  vitals: Vitals | null;

  /**
   * The SSN and name again, bound to this row: `ssn` and `name` are bound to the clinic only, so
   * another patient's values copied over them would decrypt. PatientsService refuses a row whose
   * `ssn` or `name` differs from this copy.
   */
  @EncryptedColumn({ type: "json", context: ROW_SCOPE })
  identity: PatientIdentity;

  @CreateDateColumn()
  createdAt: Date;
}
