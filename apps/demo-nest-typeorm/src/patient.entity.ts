import { EncryptedColumn } from "@kms/typeorm";
import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from "typeorm";

/** Every encrypted value is bound to the tenant of the request that wrote it (ambient scope). */
const TENANT_SCOPE = { fromScope: ["tenant"] };

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

  @EncryptedColumn({ nullable: true, context: TENANT_SCOPE })
  note: string | null;

  @EncryptedColumn({ type: "json", nullable: true, context: TENANT_SCOPE })
  vitals: Vitals | null;

  @CreateDateColumn()
  createdAt: Date;
}
