import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

/**
 * A webhook the receiver accepted, with what its signature proved. It carries no patient data
 * (the event names the patient by id only), so nothing here is encrypted.
 */
@Entity("webhook_events")
export class WebhookEvent {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 60 })
  event: string;

  @Column({ type: "varchar", length: 40 })
  tenantId: string;

  @Column({ type: "integer" })
  patientId: number;

  /** The `keyid` of the verified signature: which sender's key vouched for the body. */
  @Column({ type: "varchar", length: 100 })
  signatureKeyId: string;

  @Column({ type: "varchar", length: 100 })
  signatureLabel: string;

  @CreateDateColumn()
  receivedAt: Date;
}
