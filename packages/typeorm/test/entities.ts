import "reflect-metadata";
import {
  ChildEntity,
  Column,
  type ColumnType,
  DeleteDateColumn,
  Entity,
  ManyToOne,
  OneToMany,
  PrimaryGeneratedColumn,
  type Relation,
  TableInheritance,
} from "typeorm";
import { EncryptedColumn } from "../src/index.ts";

const BYTES: ColumnType = process.env.KMS_TYPEORM_BYTES_TYPE === "bytea" ? "bytea" : "blob";

@Entity("kms_users")
export class User {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ deterministic: true, unique: true, context: { fromRow: ["tenantId"] } })
  email: string;

  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "phoneIndex", normalize: ["trim"], bytes: 16 },
    context: { fromRow: ["tenantId"] },
  })
  phone: string | null;

  phoneIndex?: string | null;

  @EncryptedColumn({ type: "json", nullable: true, context: { fromRow: ["tenantId"] } })
  profile: { likes: string[]; age: number } | null;

  @EncryptedColumn({ storage: "bytes", nullable: true, columnType: BYTES })
  avatar: Uint8Array | null;

  @OneToMany(
    () => Post,
    (post) => post.author,
  )
  posts: Relation<Post[]>;
}

@Entity("kms_posts")
export class Post {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn({ context: { fromScope: ["tenant"] } })
  body: string;

  @ManyToOne(
    () => User,
    (user) => user.posts,
    { eager: true },
  )
  author: Relation<User>;
}

/** Started life with plaintext columns; the migration job encrypts them in place. */
@Entity("kms_notes")
export class Note {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn()
  title: string;

  @EncryptedColumn({ deterministic: true, nullable: true })
  code: string | null;
}

/**
 * Every encrypted column nullable, so that a row can hold nothing bound to its tenant; a unique
 * deterministic column for upserts; a plain counter for increment(); soft deletes.
 */
@Entity("kms_cards")
export class Card {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({
    deterministic: true,
    unique: true,
    nullable: true,
    context: { fromRow: ["tenantId"] },
  })
  holder: string | null;

  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "panIndex" },
    context: { fromRow: ["tenantId"] },
  })
  pan: string | null;

  panIndex?: string | null;

  @Column({ type: "int", default: 0 })
  uses: number;

  @DeleteDateColumn({ nullable: true })
  deletedAt: Date | null;
}

/** Single-table inheritance: accounts of every kind share one table, told apart by `kind`. */
@Entity("kms_accounts")
@TableInheritance({ column: { type: String, length: 32, name: "kind" } })
export class Account {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  holder: string | null;
}

@ChildEntity("savings")
export class SavingsAccount extends Account {
  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  iban: string | null;
}
