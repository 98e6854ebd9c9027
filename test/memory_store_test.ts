import { createMemoryStore } from "../lib/store/memory.ts";
import { storeContract } from "./store_contract.ts";

storeContract("MemoryStore", (options) => createMemoryStore(options));
