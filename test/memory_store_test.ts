import { createMemoryStore } from "../lib/memory_store.ts";
import { storeContract } from "./store_contract.ts";

storeContract("MemoryStore", (options) => createMemoryStore(options));
