/** A tiny promise wrapper over one IndexedDB database with plain key-value stores. */

export class Store {
  private db: Promise<IDBDatabase>;
  constructor(name: string, readonly stores: string[]) {
    this.db = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => {
        for (const s of stores) if (!req.result.objectStoreNames.contains(s)) req.result.createObjectStore(s);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  private async tx<T>(store: string, mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.db;
    return new Promise<T>((resolve, reject) => {
      const t = db.transaction(store, mode);
      const req = f(t.objectStore(store));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  }
  get<T>(store: string, key: string): Promise<T | undefined> {
    return this.tx(store, 'readonly', (s) => s.get(key) as IDBRequest<T | undefined>);
  }
  put(store: string, key: string, value: unknown): Promise<IDBValidKey> {
    return this.tx(store, 'readwrite', (s) => s.put(value, key));
  }
  delete(store: string, key: string): Promise<undefined> {
    return this.tx(store, 'readwrite', (s) => s.delete(key));
  }
  all<T>(store: string): Promise<T[]> {
    return this.tx(store, 'readonly', (s) => s.getAll() as IDBRequest<T[]>);
  }
  clear(store: string): Promise<undefined> {
    return this.tx(store, 'readwrite', (s) => s.clear());
  }
}
