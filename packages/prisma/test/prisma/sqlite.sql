CREATE TABLE "User" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "email" TEXT NOT NULL,
  "name" TEXT,
  "phone" TEXT,
  "phoneIndex" TEXT,
  "profile" TEXT,
  "score" TEXT,
  "avatar" BLOB,
  "plain" TEXT
);
CREATE UNIQUE INDEX "User_tenantId_email_key" ON "User"("tenantId", "email");
CREATE TABLE "Post" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "title" TEXT NOT NULL,
  "body" TEXT NOT NULL,
  "publishedAt" TEXT,
  "authorId" INTEGER NOT NULL,
  CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Comment" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "text" TEXT NOT NULL,
  "postId" INTEGER NOT NULL,
  CONSTRAINT "Comment_postId_fkey" FOREIGN KEY ("postId") REFERENCES "Post" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Chart" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "recordId" TEXT NOT NULL,
  "ssn" TEXT NOT NULL,
  "name" TEXT,
  "note" TEXT,
  "vitals" TEXT,
  "ownerId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Chart_recordId_key" ON "Chart"("recordId");
CREATE UNIQUE INDEX "Chart_tenantId_ssn_key" ON "Chart"("tenantId", "ssn");
CREATE TABLE "Draft" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT,
  "threadId" TEXT,
  "body" TEXT,
  "reply" TEXT,
  "authorId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
  "parentId" INTEGER REFERENCES "Draft" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE TABLE "Tenant" (
  "id" TEXT NOT NULL PRIMARY KEY,
  "name" TEXT NOT NULL
);
CREATE TABLE "Invoice" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "memo" TEXT,
  "in" TEXT,
  "equals" TEXT,
  "status" TEXT NOT NULL DEFAULT 'OPEN',
  CONSTRAINT "Invoice_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Invoice_tenantId_in_key" ON "Invoice"("tenantId", "in");
CREATE UNIQUE INDEX "Invoice_in_equals_key" ON "Invoice"("in", "equals");
CREATE UNIQUE INDEX "Invoice_tenantId_id_key" ON "Invoice"("tenantId", "id");
CREATE TABLE "InvoiceLine" (
  "tenantId" TEXT NOT NULL,
  "number" INTEGER NOT NULL,
  "invoiceId" INTEGER NOT NULL,
  "text" TEXT,
  PRIMARY KEY ("tenantId", "number"),
  CONSTRAINT "InvoiceLine_tenantId_invoiceId_fkey" FOREIGN KEY ("tenantId", "invoiceId") REFERENCES "Invoice" ("tenantId", "id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "_InvoiceWatchers" (
  "A" INTEGER NOT NULL,
  "B" TEXT NOT NULL,
  CONSTRAINT "_InvoiceWatchers_A_fkey" FOREIGN KEY ("A") REFERENCES "Invoice" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
  CONSTRAINT "_InvoiceWatchers_B_fkey" FOREIGN KEY ("B") REFERENCES "Tenant" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "_InvoiceWatchers_AB_unique" ON "_InvoiceWatchers"("A", "B");
CREATE INDEX "_InvoiceWatchers_B_index" ON "_InvoiceWatchers"("B");
CREATE TABLE "Patient" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "ssn" TEXT NOT NULL,
  "email" TEXT NOT NULL,
  "emailIdx" TEXT,
  "chart" TEXT
);
CREATE UNIQUE INDEX "Patient_tenantId_ssn_key" ON "Patient"("tenantId", "ssn");
CREATE TABLE "Ledger" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "active" TEXT,
  "verified" TEXT,
  "balance" TEXT
);
CREATE TABLE "Payment" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "amount" TEXT,
  "amountIndex" TEXT,
  "paidAt" TEXT,
  "paidAtIndex" TEXT,
  "ref" TEXT,
  "refIndex" TEXT
);
CREATE TABLE "Memo" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "body" TEXT,
  "deletedAt" DATETIME
);
CREATE TABLE "Label" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "code" TEXT NOT NULL,
  "phone" TEXT,
  "phoneIdx" TEXT,
  "ownerId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE TABLE "Reading" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "rank" INTEGER NOT NULL,
  "serial" BIGINT NOT NULL,
  "weight" REAL NOT NULL,
  "status" TEXT NOT NULL,
  "value" TEXT,
  "amount" DECIMAL,
  "takenAt" DATETIME,
  "flagged" BOOLEAN
);
CREATE TABLE "Preference" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "secret" TEXT,
  "hint" TEXT,
  "hintIdx" TEXT,
  "data" TEXT,
  "userId" INTEGER NOT NULL UNIQUE REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Parcel" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "tenantId" TEXT NOT NULL,
  "code" TEXT NOT NULL,
  "body" TEXT,
  "label" TEXT,
  "where" TEXT,
  "data" TEXT,
  "create" TEXT,
  "update" TEXT,
  "skipDuplicates" BOOLEAN,
  "ownerId" INTEGER NOT NULL REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
  UNIQUE ("tenantId", "code")
);
CREATE TABLE "Audit" (
  "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  "message" TEXT NOT NULL
);
CREATE TABLE "KmsDataKey" (
  "id" TEXT NOT NULL PRIMARY KEY,
  "kmsKeyId" TEXT NOT NULL,
  "wrappedKey" BLOB NOT NULL,
  "encryptionContext" TEXT NOT NULL,
  "purpose" TEXT NOT NULL,
  "createdAt" BIGINT NOT NULL
);
